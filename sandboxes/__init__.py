"""The container side of the Docker sandbox: the image definition and the in-sandbox runner (see README.md)."""

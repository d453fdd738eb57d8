from openended.cli import app

app()

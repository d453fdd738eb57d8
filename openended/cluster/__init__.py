"""A campaign's Ray cluster beyond one machine: what every node needs, checked and supplied through Ray.

``check`` (``openended cluster check``): the Docker engine, the sandbox image and its version on every
alive node, and the image loaded onto nodes that lack it from the driver's copy, through Ray (no registry).
The task folders and the runner reach the nodes with every campaign (:mod:`openended.engine.node_files`).
"""

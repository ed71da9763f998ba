"""psgd: compressed-communication distributed SGD on an MPI parameter server, every byte counted."""

__version__ = "0.1.0"

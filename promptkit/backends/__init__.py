"""Model backends: the contract every model sits behind (base.py), and one module per kind of model."""

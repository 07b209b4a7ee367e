"""alexbench: the AlexNet challenge (PyTorch vs Keras on CIFAR-10) as one trustworthy command."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Physics-informed training (PINNs) on mgnn's ResNet."""

"""Renderers that turn the committed service configs into a runner's variant of them."""

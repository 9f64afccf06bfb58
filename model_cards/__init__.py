"""The model card templates, installed as package data of `diffusers_simple_training` (no code)."""

"""Converters from other checkpoint formats (Hugging Face) to gguflite files."""

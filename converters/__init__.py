"""Converters from other checkpoint formats (Hugging Face) to gguflite files.

    convert        HF Llama-family checkpoint (directory or hub repo id) -> one file
    requantize     any readable file -> the same model in other tensor types
    set_metadata   typed, validated metadata edits, written atomically
"""

"""Model file formats, family-independent: GGUF files, Hugging Face folders, tokenizers."""

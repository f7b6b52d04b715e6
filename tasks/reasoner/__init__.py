"""The local reasoner: one interface over Ollama, llama.cpp and a deterministic template."""

"""Escalation to the remote LLM under a hard budget: triggers, schemas, bounds, budget, service."""

"""The settings models of every domain, at the bottom of the layers: plain pydantic models that
import nothing else from the project. ``tasks.settings`` assembles them into the one settings
tree; a domain package reads its own section from here."""

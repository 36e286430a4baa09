"""A user brain module that fails while being imported (BRAIN_BACKEND / BRAIN_TOOLS tests)."""

raise RuntimeError("this module needs a setting it did not get")

"""Domain types of the control plane: plain dataclasses and enums, no protobuf, no SQL."""

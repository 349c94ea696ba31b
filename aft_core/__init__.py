"""aft_core package."""

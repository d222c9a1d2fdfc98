"""The bundled guest: kernel and user programs (C/assembly), prebuilt images, catalog."""

from .catalog import CATALOG, Workload, image_path, select

__all__ = ["CATALOG", "Workload", "image_path", "select"]

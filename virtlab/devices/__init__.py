"""Device models of the virtual PC, all reached by port I/O."""

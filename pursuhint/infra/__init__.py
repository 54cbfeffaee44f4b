"""Infrastructure every room uses: the one registry type, atomic file writes, the runs folder, the sweep's log,
devices and precision."""

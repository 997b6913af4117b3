"""Launch files, YAML configs, the node-graph runner for pip installs and the Fast DDS profile."""

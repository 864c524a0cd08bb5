"""The cluster layer: coordinator, workers, sessions, supervisor, and the cluster services
(registry, balancing, journal, autoscaling). See each module's docstring."""

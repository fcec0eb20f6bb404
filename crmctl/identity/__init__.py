"""Identity resolution: normalise identifiers, block on indexed keys, compare, cluster, merge."""

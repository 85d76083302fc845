"""`make bench`: the sidecar measured against the floors it cannot beat, in the same run."""

"""`python -m sidecar`: the same command line as `integration-sidecar`."""

from sidecar.cli import main

raise SystemExit(main())

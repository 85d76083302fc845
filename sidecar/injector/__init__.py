"""The sidecar injector: a Kubernetes mutating admission webhook (`integration-sidecar injector`).

It adds the sidecar to pods annotated `integration-sidecar.io/inject: "true"`. The pieces, each
with one job: `settings` turns the injector's defaults and a pod's annotations into what to
inject, `sidecar` builds the container and volumes (plain Kubernetes JSON), `mutate` answers an
AdmissionReview with a JSONPatch, `tls` keeps the serving certificate fresh, `webhook` is the
HTTPS server and `cli` its command line. `probe` is the exec health probe the sidecar gets when
it listens on a Unix socket (kubelet's gRPC probes dial TCP only).

This package is imported by `sidecar.cli` only: nothing here is loaded when the sidecar serves.
"""

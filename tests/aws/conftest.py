"""Fixtures of the AWS tests: moto in server mode (`moto_server`, `aws_address`)."""

from aws_server import aws_address, moto_server

__all__ = ["aws_address", "moto_server"]

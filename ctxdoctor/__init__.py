"""ctxdoctor: find where an app loses OpenTelemetry context, and say what to change."""

__version__ = "0.1.0"

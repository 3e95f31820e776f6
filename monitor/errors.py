"""One exception family: every error a user can act on derives from MonitorError.

The CLI prints ``str(error)`` (one sentence) and exits non-zero; any other exception is a bug and keeps its traceback.
"""


class MonitorError(Exception):
    """Base of every error whose message a user can act on."""


class ConfigError(MonitorError):
    """A setting is missing, unknown or out of range; the message names the key."""


class BundleError(MonitorError):
    """A model bundle is missing, damaged or incompatible with this version."""


class InputError(MonitorError):
    """Input data cannot be used (missing file or column, empty training set, unreadable format)."""


class StateError(MonitorError):
    """A checkpoint in the state directory cannot be restored."""


class KafkaAccessError(MonitorError):
    """Kafka refused the daemon: failed authentication, an untrusted certificate, or a missing ACL right."""

"""The one error type a user can fix, and secret masking: a leaf module every other may import."""


class UserError(Exception):
    """An error the user can fix. The message is what they will read."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def mask_secrets(text, config):
    """Replace every secret the configuration holds with *** (defence in depth)."""
    for secret in (config.secrets() if config is not None else ()):
        if secret:
            text = text.replace(secret, "***")
    return text

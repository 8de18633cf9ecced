"""lookstream's shared language: message models, topic names, codec and client."""

from . import topics
from .codec import DecodeError, decode, encode
from .models import *  # noqa: F401,F403
from .models import ALL_MESSAGES, LABELS, SCHEMA_VERSION

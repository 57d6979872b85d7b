"""The ``ENGAGEMENT_*`` variables a settings object reads: names checked, secrets
from files, the enums' spellings.

The known names are the settings object's own aliases, so a new setting is
known as soon as it is declared. A name the settings do not read stops the
start with the closest known names (a misspelt variable would otherwise be
silently ignored). Every secret setting (a ``SecretStr`` field) may instead
come from the file named by the same variable with ``_FILE`` appended, as
container platforms mount secrets; docs/CONTRACTS.md, "Settings".
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from tables.errors import ConfigurationError

PREFIX: Final = "ENGAGEMENT_"
FILE_SUFFIX: Final = "_FILE"
MAX_SECRET_FILE_BYTES: Final = 65_536


class PrefixedEnvironment(PydanticBaseSettingsSource):
    """Only ``ENGAGEMENT_*`` variables, keyed by their names (the field aliases); an
    unknown name is refused and ``*_FILE`` secrets are read."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefixed = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
        return resolve_variables(prefixed, self.settings_cls)


def upper_case(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def lower_case(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(upper_case)
]
SecurityProtocol = Annotated[
    Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(upper_case)
]
# the mechanisms a username and password configure (aiokafka's others need more)
SaslMechanism = Annotated[
    Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(upper_case)
]
STORES: Final = ("memory://", "rocksdb://")


def variable_names(model: type[BaseModel]) -> frozenset[str]:
    """Every ``ENGAGEMENT_*`` name the model reads (its fields' aliases)."""
    return frozenset(
        str(field.validation_alias)
        for field in model.model_fields.values()
        if str(field.validation_alias).startswith(PREFIX)
    )


def secret_variables(model: type[BaseModel]) -> frozenset[str]:
    """The names of the secret settings: those that may come from a ``*_FILE``."""
    return frozenset(
        str(field.validation_alias)
        for field in model.model_fields.values()
        if _holds_secret(field.annotation) and str(field.validation_alias).startswith(PREFIX)
    )


def _holds_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return False


def resolve_variables(variables: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The model's values by variable name: unknown names refused, ``*_FILE`` secrets read.

    ``variables`` holds ``ENGAGEMENT_*`` names only."""
    known = variable_names(model)
    secrets = secret_variables(model)
    files = {name + FILE_SUFFIX: name for name in secrets}
    unknown = sorted(name for name in variables if name not in known and name not in files)
    if unknown:
        raise ConfigurationError(_unknown_message(unknown, known | files.keys()))
    resolved = {name: value for name, value in variables.items() if name in known}
    for file_variable, name in files.items():
        if file_variable not in variables:
            continue
        if name in variables:
            raise ConfigurationError(
                f"both {name} and {file_variable} are set: give the secret one way only"
            )
        resolved[name] = read_secret_file(file_variable, str(variables[file_variable]))
    return resolved


def read_secret_file(variable: str, path_text: str) -> str:
    """The secret in the file ``path_text``, without its trailing line break.

    Errors name the variable and the path, never the content."""
    path = Path(path_text)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"{variable}: cannot read {path_text!r}: {reason}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ConfigurationError(
            f"{variable}: {path_text!r} is larger than {MAX_SECRET_FILE_BYTES} bytes; "
            "it should hold the secret alone"
        )
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{variable}: {path_text!r} is not UTF-8 text") from None
    return text.rstrip("\r\n")


def _unknown_message(unknown: list[str], known: typing.AbstractSet[str]) -> str:
    # compared without the prefix, which every name shares
    suffixes = sorted(name.removeprefix(PREFIX) for name in known)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=2, cutoff=0.75)
        hint = f" (did you mean {' or '.join(PREFIX + c for c in close)}?)" if close else ""
        parts.append(name + hint)
    return (
        "unknown setting " + "; ".join(parts) + ": the engine reads only the ENGAGEMENT_* "
        "variables listed in docs/CONTRACTS.md (Settings); remove or rename it"
    )

"""One spelling per mailbox, and no look-alikes: what `POST /users` accepts as an email.

email-validator (`strict=True`: the 64-octet local part limit, which its default mode skips)
checks the syntax and the internationalised domain (IDNA 2008) and normalises it (Unicode NFC,
the domain lowercased). On top of that, each part must be written in one script: `example.com`
spelled with a Cyrillic a (U+0430) made a second account beside the Latin one (issue 15).
The stored form is casefolded, so `Ab@x.org` and `ab@x.org` are one account.
"""

import unicodedata
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field


def _scripts(text: str) -> set[str]:
    """The scripts of the letters in `text`, by the first word of each letter's Unicode name
    (LATIN, CYRILLIC, GREEK, CJK, ...); digits and punctuation belong to every script."""
    return {
        unicodedata.name(char, "UNKNOWN").split()[0]
        for char in text
        if unicodedata.category(char).startswith("L")
    }


def normalized_email(value: str) -> str:
    try:
        address = validate_email(value, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    for part in [address.local_part, *address.domain.split(".")]:
        if len(_scripts(part)) > 1:
            raise ValueError(f"'{part}' mixes scripts ({', '.join(sorted(_scripts(part)))})")
    return address.normalized.casefold()


Email = Annotated[
    str,
    Field(max_length=254, json_schema_extra={"format": "email"}),
    AfterValidator(normalized_email),
]

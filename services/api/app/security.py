import hashlib
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is safe; a slow KDF would only cost CPU.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_match(stored_hash: str, token: str) -> bool:
    return secrets.compare_digest(stored_hash, hash_token(token))

#!/usr/bin/env bash
# Print the fingerprint of a walvault encryption key: 16 hex digits that name the key in every
# object header, in walvault.json ("key_fingerprints") and in error messages, and reveal
# nothing about it (docs/FORMAT.md, section 2.2). Compare it with the repository before you
# trust a key you found in a vault, or after a rotation.
#
# Usage: key-fingerprint.sh            the key in $BACKUP_ENCRYPTION_KEY, else the file $WALVAULT_KEY_FILE
#        key-fingerprint.sh FILE       the key in FILE (- reads standard input)
#
# Key material as walvault reads it (surrounding whitespace ignored, docs/FORMAT.md 2.1): 64 hex
# digits, base64 of 32 bytes (what `openssl rand -base64 32` prints), or a declared passphrase
# `passphrase:<text>` (PBKDF2-HMAC-SHA256, 10,000 iterations); anything else is not a key.
# Needs OpenSSL 3. The derived key is on openssl's command line for a moment: run this in the
# database container or on your own workstation, not on a shared host.
# Exit status: 0 printed, 2 no key given or not a key.
set -euo pipefail

if [ $# -gt 0 ]; then
    if [ "$1" = - ]; then material=$(cat); else material=$(cat -- "$1"); fi
elif [ -n "${BACKUP_ENCRYPTION_KEY:-}" ]; then
    material=$BACKUP_ENCRYPTION_KEY
elif [ -n "${WALVAULT_KEY_FILE:-}" ]; then
    material=$(cat -- "$WALVAULT_KEY_FILE")
else
    echo "key-fingerprint.sh: error: no key: set BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE, or name a file" >&2
    exit 2
fi
# Surrounding whitespace (spaces, tabs, newlines) is not part of the key.
material="${material#"${material%%[![:space:]]*}"}"
material="${material%"${material##*[![:space:]]}"}"
[ -n "$material" ] || { echo "key-fingerprint.sh: error: the key is empty" >&2; exit 2; }

hex_of() { od -An -v -tx1 | tr -d ' \n'; }
master=
if [[ $material =~ ^[0-9a-fA-F]{64}$ ]]; then
    master=$(printf '%s' "$material" | tr 'A-F' 'a-f')
elif [[ $material =~ ^[A-Za-z0-9+/]{43}=?$ || $material =~ ^[A-Za-z0-9_-]{43}=?$ ]]; then
    std=$(printf '%s' "$material" | tr -- '-_' '+/')
    [ ${#std} = 43 ] && std="$std="
    decoded=$(printf '%s\n' "$std" | base64 -d 2>/dev/null | hex_of || true)
    # Standard or URL-safe alphabet (not both); only a canonical encoding of exactly 32 bytes
    # is a key (the unused low bits are zero).
    if [ ${#decoded} = 64 ]; then
        again=$(printf '%s' "$decoded" | sed 's/../\\x&/g' | { read -r esc; printf '%b' "$esc"; } | base64 | tr -d '\n')
        [ "$again" = "$std" ] && master=$decoded
    fi
fi
if [[ $material == passphrase:* ]]; then
    pass=${material#passphrase:}
    pass="${pass#"${pass%%[![:space:]]*}"}"
    pass="${pass%"${pass##*[![:space:]]}"}"
    [ -n "$pass" ] || { echo "key-fingerprint.sh: error: the passphrase after passphrase: is empty" >&2; exit 2; }
    if [[ $pass == *[\"\'\`[:cntrl:]]* ]]; then
        echo "key-fingerprint.sh: error: the passphrase contains a quote or a control character" >&2
        exit 2
    fi
    echo "key-fingerprint.sh: the key is a passphrase (a random 32-byte key is recommended)" >&2
    master=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "pass:$pass" \
        -kdfopt salt:walvault/v1/passphrase -kdfopt iter:10000 PBKDF2 | tr -d ':\n' | tr 'A-F' 'a-f')
elif [ -z "$master" ]; then
    echo "key-fingerprint.sh: error: not a key: expected 64 hex digits, base64 of 32 bytes, or passphrase:<text>" >&2
    exit 2
fi
printf '%s' walvault/v1/key-fingerprint \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$master" \
    | awk '{ print substr($NF, 1, 16) }'

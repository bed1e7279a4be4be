"""coordctl certs init (a development CA and certificates) and auth new-token.

Certificates: an EC P-256 CA, one certificate per node (server and client use,
with the node's IPs and names as subject alternative names, CN = node id), and
client certificates (CN = the identity the tokens file maps to a role). For
production, use your own PKI; these commands are what CI and the tests use.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets

import click
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coord.cli.ctl import main
from coord.cli.output import CLIError
from coord.server.security.auth import RANK, hash_token


@main.group()
def certs() -> None:
    """Development certificates for TLS and mutual TLS."""


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coord development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write(path: str, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    cn: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    days: int,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _sans(spec: str) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            out.append(x509.DNSName(item))
    return out


@certs.command("init")
@click.option("--dir", "out_dir", required=True, help="Where to write the PEM files.")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    help="ID=ADDR[,ADDR...]: a node certificate for these IPs/names (repeat per node).",
)
@click.option("--client", "clients", multiple=True, help="A client certificate with this CN.")
@click.option("--days", type=int, default=365, show_default=True)
def certs_init(out_dir: str, nodes: tuple[str, ...], clients: tuple[str, ...], days: int) -> None:
    """Create a CA (ca.pem, ca-key.pem) and node and client certificates (NAME.pem,
    NAME-key.pem) in DIR. Keys are written mode 0600."""
    if not nodes and not clients:
        raise CLIError("give at least one --node ID=ADDR or --client NAME", 2)
    os.makedirs(out_dir, exist_ok=True)
    ca_path = os.path.join(out_dir, "ca.pem")
    if os.path.exists(ca_path):
        raise CLIError(f"{ca_path} exists: use an empty directory (never overwrite a CA)", 2)
    ca_name = _name("coord development CA")
    ca_key, ca = _new_ca(ca_name, days)
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM))
    _write(os.path.join(out_dir, "ca-key.pem"), _key_pem(ca_key), private=True)
    written = ["ca.pem"]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    for spec in nodes:
        node_id, sep, addrs = spec.partition("=")
        if not sep or not node_id or not addrs:
            raise CLIError(f"--node {spec!r} is not ID=ADDR[,ADDR...]", 2)
        key, cert = _issue(node_id, ca_key, ca_name, days, _sans(addrs), both)
        _write(
            os.path.join(out_dir, f"{node_id}.pem"), cert.public_bytes(serialization.Encoding.PEM)
        )
        _write(os.path.join(out_dir, f"{node_id}-key.pem"), _key_pem(key), private=True)
        written.append(f"{node_id}.pem")
    for cn in clients:
        key, cert = _issue(cn, ca_key, ca_name, days, [], [ExtendedKeyUsageOID.CLIENT_AUTH])
        _write(os.path.join(out_dir, f"{cn}.pem"), cert.public_bytes(serialization.Encoding.PEM))
        _write(os.path.join(out_dir, f"{cn}-key.pem"), _key_pem(key), private=True)
        written.append(f"{cn}.pem")
    click.echo(f"wrote {', '.join(written)} (and their keys) to {out_dir}")


@main.group()
def auth() -> None:
    """Bearer tokens for the tokens file (--auth-tokens-file)."""


@auth.command("new-token")
@click.argument("name")
@click.option("--role", type=click.Choice(sorted(RANK)), required=True)
@click.option("--groups", default="*", show_default=True, help="member role: group patterns.")
@click.option("--append", "append_to", default="", help="Append the entry to this tokens file.")
def new_token(name: str, role: str, groups: str, append_to: str) -> None:
    """Make a random token for NAME: prints the token (once: only its hash is kept) and
    the tokens-file entry."""
    token = secrets.token_urlsafe(32)
    entry = {
        "name": name,
        "role": role,
        "groups": [g.strip() for g in groups.split(",") if g.strip()],
        "sha256": hash_token(token),
    }
    if append_to:
        data: dict[str, object] = {}
        if os.path.exists(append_to):
            with open(append_to, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        tokens = data.setdefault("tokens", [])
        assert isinstance(tokens, list)
        if any(isinstance(t, dict) and t.get("name") == name for t in tokens):
            raise CLIError(f"{append_to} already has a token named {name!r}", 2)
        tokens.append(entry)
        tmp = append_to + ".tmp"
        _write(tmp, yaml.safe_dump(data, sort_keys=False).encode(), private=True)
        os.replace(tmp, append_to)
    click.echo(f"token: {token}")
    if not append_to:
        click.echo("tokens file entry:\n" + yaml.safe_dump({"tokens": [entry]}, sort_keys=False))


def _new_ca(ca_name: x509.Name, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate (may sign certificates, nothing else)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca

"""A private Dovecot (IMAP) per test module, with its own config in a temp dir (see
../shared/RECIPES.md), plus a certificate for 127.0.0.1 for the TLS modes, and helpers to put
messages in the mailbox over IMAP APPEND and look at it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioimaplib import aioimaplib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.ports import free_port

USER = "bounces"
PASSWORD = "Imap-Pa55-7f3e2b"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 only (not for "localhost")."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailroom test IMAP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def shared_temp_dir(prefix: str) -> Iterator[Path]:
    """Not pytest's tmp_path: its parents are private (0700) and Dovecot's own users (auth as
    "dovecot", mail as the mailbox's user) must read the files."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def skip_without_dovecot() -> None:
    if shutil.which("dovecot") is None:
        pytest.skip("needs Dovecot (apt install dovecot-imapd)")


class Dovecot:
    """A Dovecot instance of our own: one user, Maildir under the temp dir; TLS (STARTTLS and
    IMAPS) when given a certificate, plain IMAP only otherwise."""

    def __init__(self, directory: Path, cert: Path | None = None, key: Path | None = None) -> None:
        self.directory = directory
        self.imap_port = free_port()
        self.imaps_port = free_port() if cert is not None else 0
        mail = directory / "mail"
        mail.mkdir()
        if os.geteuid() == 0:  # mail processes may not run as root: use nobody
            uid, gid = 65534, 65534
            users = ""
            os.chmod(mail, 0o777)
        else:
            uid, gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(uid).pw_name
            users = (
                f"default_login_user = {me}\ndefault_internal_user = {me}\n"
                f"default_internal_group = {pwd.getpwuid(uid).pw_name}\n"
            )
        (directory / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{mail}/{USER}\n"
        )
        tls = (
            f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"
            if cert is not None
            else "ssl = no\n"
        )
        imaps = (
            f"  inet_listener imaps {{\n    port = {self.imaps_port}\n    ssl = yes\n  }}\n"
            if cert is not None
            else "  inet_listener imaps {\n    port = 0\n  }\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.config = directory / "dovecot.conf"
        self.config.write_text(
            f"""base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
instance_name = mailroom-test-{self.imap_port}
protocols = imap
listen = 127.0.0.1
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
{users}passdb {{
  driver = passwd-file
  args = {directory}/passwd
}}
userdb {{
  driver = passwd-file
  args = {directory}/passwd
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.imap_port}
  }}
{imaps}}}
service anvil {{
  chroot =
}}
"""
        )

    def start(self) -> None:
        # in the foreground (-F): a daemon would keep our pipes open, and is harder to stop;
        # in a session of its own, so that kill() takes its children with it
        started_lines = self.log().count("starting up")
        self.process = process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.log().count("starting up") > started_lines:
                return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not start:\n{self.log()}")

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """A crash: SIGKILL to the master and every process of its session."""
        process = self.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the mailbox, over IMAP ----------------------------------------------------------

    async def _client(self) -> aioimaplib.IMAP4:
        client = aioimaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        await client.wait_hello_from_server()
        response = await client.login(USER, PASSWORD)
        assert response.result == "OK", response
        return client

    async def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = await self._client()
        try:
            for message in messages:
                response = await client.append(message, mailbox=folder)
                assert response.result == "OK", response
        finally:
            with contextlib.suppress(Exception):
                await client.logout()

    async def count(self, folder: str = "INBOX") -> int:
        client = await self._client()
        try:
            response = await client.select(folder)
            assert response.result == "OK", response
            exists = aioimaplib.extract_exists(response)
            return int(exists or 0)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)


@contextlib.contextmanager
def running_dovecot(*, tls: bool = False) -> Iterator[Dovecot]:
    """A started Dovecot in a temp dir of its own (skips when Dovecot is not installed)."""
    skip_without_dovecot()
    with shared_temp_dir("mailroom-dovecot-") as directory:
        cert, key = make_certificate(directory) if tls else (None, None)
        (directory / "dovecot").mkdir()
        server = Dovecot(directory / "dovecot", cert, key)
        try:
            server.start()
            yield server
        finally:
            server.stop()

"""Real authentication backends for the integration tests.

- `Slapd`: a private OpenLDAP server (slapd, mdb backend) on 127.0.0.1 and a free port, with a small
  directory of users, optionally with StartTLS; it can be stopped and started again to test a backend
  that is down.
- `PamService`: a PAM configuration folder for pam_start_confdir whose service checks a private
  password file (pam_pwdfile), so no system account is involved.
- `ThrowawayUser`: a real system user with a known password and a PAM service folder that checks it
  through pam_unix (/etc/shadow); the user is removed when the test ends.

Like the harness: processes are stopped by PID (SIGTERM, wait, SIGKILL), every wait is bounded in
count and time, temporary folders go away with the test, and a missing tool is a failure. Each class
takes the test case (`self`) or, from setUpClass, the test class (`cls`); cleanups are registered on
it either way.
"""

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import shutil
import time

from harness import (ManagedProcess, add_cleanup as _add_cleanup, owner_workdir as _workdir, require_tool,  # noqa: F401
                     sbin_tool as _sbin_tool, stop_process as _stop_process, workdir)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 20.0

SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"
SUFFIX = "dc=example,dc=org"

# uid -> (password, mail values). The uid `star*(paren` holds filter metacharacters; carol has no
# mail attribute; eve exists for the empty-password case (an empty password is sent for her).
LDAP_USERS = {
    "alice": ("alice-secret", ["alice@example.org", "alice.smith@example.org"]),
    "bob": ("bob-secret", ["bob@example.org"]),
    "star*(paren": ("weird-secret", ["weird@example.org"]),
    "carol": ("carol-secret", []),
    "eve": ("eve-secret", ["eve@example.org"]),
}

PAM_USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "star*(paren": "weird-secret",
}


# MARK: Helpers





def _run(args, input_bytes=None, env=None, timeout=TOOL_TIMEOUT):
    return subprocess.run(args, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, timeout=timeout)


def _check(args, what, input_bytes=None, env=None):
    r = _run(args, input_bytes=input_bytes, env=env)
    if r.returncode != 0:
        raise AssertionError(f"{what} failed ({r.returncode}): "
                             f"{r.stderr.decode(errors='replace')}{r.stdout.decode(errors='replace')}")
    return r.stdout.decode("utf-8")




def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]




def _write_private(path, data):
    """Writes `data` to a new file of mode 0600."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return path


def sha512_crypt(password):
    """A `$6$` crypt hash of `password`, from openssl."""
    out = _check([require_tool("openssl"), "passwd", "-6", "-stdin"], "openssl passwd",
                 input_bytes=password.encode("utf-8") + b"\n")
    return out.strip()


_ssha_cache = {}


def ssha(password):
    """An {SSHA} userPassword value from slappasswd (cached per password for speed)."""
    if password not in _ssha_cache:
        out = _check([_sbin_tool("slappasswd"), "-h", "{SSHA}", "-s", password], "slappasswd")
        _ssha_cache[password] = out.strip()
    return _ssha_cache[password]


# MARK: OpenLDAP

class Slapd(ManagedProcess):
    """A private slapd for one test (or one test class), on ldap://127.0.0.1:PORT/.

    The tree under dc=example,dc=org: ou=people with the users of LDAP_USERS (inetOrgPerson, uid,
    {SSHA} userPassword, mail values), and ou=services with the service account
    cn=relaygate,ou=services,dc=example,dc=org. The ACL lets anyone bind as a user (auth on
    userPassword, never read), lets the service account and each user read ou=people, and denies
    anonymous search of ou=people.

    tls=(cert, key, ca) enables StartTLS on the same port; require_tls=True refuses simple binds
    without it (LDAP result 13, confidentialityRequired). debug is slapd's -d level: any -d keeps
    slapd in the foreground; "none" prints only errors (with "0" a bad configuration exits silently),
    "stats" logs every operation. extra_ldif is appended to the data loaded with slapadd.
    """

    process_name = "slapd"

    def __init__(self, test, tls=None, require_tls=False, debug="none", extra_ldif="", start=True):
        self.test = test
        self.root = _workdir(test, "relaygate-slapd-")
        self.tls = tls
        self.require_tls = require_tls
        self.debug = str(debug)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.uri = f"ldap://{self.host}:{self.port}/"
        # With TLS, ldaps:// (TLS from the first byte) on a second port as well.
        self.ldaps_port = free_port(self.host) if tls else None
        self.ldaps_uri = f"ldaps://{self.host}:{self.ldaps_port}/" if tls else None
        self.suffix = SUFFIX
        self.base = f"ou=people,{SUFFIX}"
        self.services_base = f"ou=services,{SUFFIX}"
        self.root_dn = f"cn=admin,{SUFFIX}"
        self.root_password = "root-secret"
        self.service_dn = f"cn=relaygate,ou=services,{SUFFIX}"
        self.service_password = "service-secret"
        self.users = {uid: pw for uid, (pw, _) in LDAP_USERS.items()}
        self.mails = {uid: list(mails) for uid, (_, mails) in LDAP_USERS.items()}
        self.conf_path = os.path.join(self.root, "slapd.conf")
        self.ldif_path = os.path.join(self.root, "data.ldif")
        self.db_dir = os.path.join(self.root, "db")
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.slapd = _sbin_tool("slapd")
        self.slapadd = _sbin_tool("slapadd")
        self.ldapwhoami = require_tool("ldapwhoami")
        self.ldapsearch = require_tool("ldapsearch")
        os.makedirs(self.db_dir, mode=0o700)
        with open(self.conf_path, "w") as f:
            f.write(self._conf())
        with open(self.ldif_path, "w") as f:
            f.write(self._ldif() + extra_ldif)
        _check([self.slapadd, "-q", "-f", self.conf_path, "-l", self.ldif_path], "slapadd")
        _add_cleanup(test, self._final_stop)
        if start:
            self.start()

    # Configuration

    def _conf(self):
        lines = [f"include {SCHEMA_DIR}/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")]
        lines += [
            f"pidfile {self.root}/slapd.pid",
            f"argsfile {self.root}/slapd.args",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            "loglevel none",
        ]
        if self.tls:
            cert, key, ca = self.tls
            lines += [f"TLSCertificateFile {cert}", f"TLSCertificateKeyFile {key}", f"TLSCACertificateFile {ca}",
                      "TLSVerifyClient never"]
        if self.require_tls:
            lines.append("security simple_bind=1")
        lines += [
            "",
            "database mdb",
            "maxsize 16777216",
            f'suffix "{SUFFIX}"',
            f'rootdn "{self.root_dn}"',
            f"rootpw {ssha(self.root_password)}",
            f"directory {self.db_dir}",
            "index objectClass eq",
            "index uid,mail eq",
            "",
            "access to dn.base=\"\" by * read",
            "access to dn.base=\"cn=Subschema\" by * read",
            "access to attrs=userPassword",
            "    by anonymous auth",
            "    by * none",
            f'access to dn.subtree="{self.base}"',
            f'    by dn.exact="{self.service_dn}" read',
            "    by users read",
            "    by * none",
            f'access to dn.base="{SUFFIX}"',
            "    by users search",
            "    by * none",
            "access to *",
            "    by self read",
            "    by * none",
        ]
        return "\n".join(lines) + "\n"

    def user_dn(self, uid):
        """The DN of user `uid` (as stored; `*` and `(` need no escaping in a DN)."""
        return f"uid={uid},{self.base}"

    def _ldif(self):
        entries = [
            [f"dn: {SUFFIX}", "objectClass: dcObject", "objectClass: organization", "dc: example",
             "o: Example"],
            [f"dn: {self.base}", "objectClass: organizationalUnit", "ou: people"],
            [f"dn: {self.services_base}", "objectClass: organizationalUnit", "ou: services"],
            [f"dn: {self.service_dn}", "objectClass: organizationalRole", "objectClass: simpleSecurityObject",
             "cn: relaygate", f"userPassword: {ssha(self.service_password)}"],
        ]
        for uid, (password, mails) in LDAP_USERS.items():
            e = [f"dn: {self.user_dn(uid)}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {uid}",
                 f"sn: {uid}", f"userPassword: {ssha(password)}"]
            e += [f"mail: {m}" for m in mails]
            entries.append(e)
        return "\n\n".join("\n".join(e) for e in entries) + "\n\n"

    def write_secret(self, path):
        """Writes the service account's password (no newline) to `path`, mode 0600; returns `path`."""
        return _write_private(path, self.service_password)

    def client_env(self):
        """Environment for OpenLDAP clients: no ldap.conf or ldaprc (LDAPNOINIT would also turn off
        the LDAPTLS_* variables), and the CA when TLS is on."""
        env = dict(os.environ)
        env.pop("LDAPNOINIT", None)
        env["LDAPCONF"] = "/dev/null"
        env["LDAPRC"] = "/dev/null"
        if self.tls:
            env["LDAPTLS_CACERT"] = self.tls[2]
            env["LDAPTLS_REQCERT"] = "demand"
        return env

    # Lifecycle

    def start(self):
        """Starts slapd in the foreground (same port, same data) and waits until a bind works."""
        assert self.proc is None, "slapd already running"
        self.runs += 1
        self.log_path = os.path.join(self.root, f"slapd-{self.runs}.log")
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [self.slapd, "-f", self.conf_path, "-h", " ".join(u for u in (self.uri, self.ldaps_uri) if u),
                 "-d", self.debug],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        ready = False
        for _ in range(1000):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            if self._accepts() and self.bind_rc(self.service_dn, self.service_password, starttls=self.require_tls,
                                               timeout=2) == 0:
                ready = True
                break
            time.sleep(0.01)
        if not ready:
            rc = self.proc.poll()
            self.stop()
            raise AssertionError(f"slapd did not start on {self.uri} (exit status {rc}); log:\n{self.log_text()}")
        return self

    def _accepts(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # Clients (checks from the test's side)

    def bind_rc(self, dn, password, starttls=False, timeout=5):
        """Exit status of `ldapwhoami` binding as `dn` (0 ok, 49 invalid credentials, 255 unreachable)."""
        args = [self.ldapwhoami, "-x", "-H", self.uri, "-D", dn, "-w", password,
                "-o", f"nettimeout={max(1, int(timeout))}"]
        if starttls:
            args.append("-ZZ")
        try:
            r = _run(args, env=self.client_env(), timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return None
        return r.returncode

    def search(self, filter_text, attrs=("mail",), bind_dn=None, password=None, starttls=False):
        """(exit status, LDIF text) of an ldapsearch under ou=people, as the service account by default."""
        args = [self.ldapsearch, "-x", "-LLL", "-o", "ldif-wrap=no", "-o", "nettimeout=5", "-H", self.uri,
                "-b", self.base, "-D", bind_dn or self.service_dn, "-w", password or self.service_password]
        if starttls:
            args.append("-ZZ")
        args.append(filter_text)
        args += list(attrs)
        r = _run(args, env=self.client_env())
        return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


# MARK: PAM

class PamService:
    """A PAM service folder whose `auth` checks a private crypt password file through pam_pwdfile.

    Use it with pam_start_confdir(service, user, conv, confdir). users: uid -> password (default
    PAM_USERS, including `star*(paren`). nodelay=False keeps the ~2 s failure delay of PAM.
    make_unavailable() moves the password file away: pam_authenticate then returns
    PAM_AUTHINFO_UNAVAIL (9), a backend that is down; make_available() puts it back.
    """

    MODULE = "pam_pwdfile.so"

    def __init__(self, test, users=None, service="relaygate", nodelay=True):
        _require_pam_module(self.MODULE)
        self.test = test
        self.service = service
        self.users = dict(PAM_USERS if users is None else users)
        root = _workdir(test, "relaygate-pam-")
        self.pwdfile = os.path.join(root, "passwd")
        _write_private(self.pwdfile, "".join(f"{u}:{sha512_crypt(p)}\n" for u, p in self.users.items()))
        self.confdir = os.path.join(root, "pam.d")
        os.makedirs(self.confdir, mode=0o755)
        auth = f"auth required {self.MODULE} pwdfile={self.pwdfile}" + (" nodelay" if nodelay else "")
        with open(os.path.join(self.confdir, service), "w") as f:
            f.write(f"{auth}\naccount required pam_permit.so\n")

    @property
    def service_file(self):
        return os.path.join(self.confdir, self.service)

    def make_unavailable(self):
        os.rename(self.pwdfile, self.pwdfile + ".away")

    def make_available(self):
        os.rename(self.pwdfile + ".away", self.pwdfile)


class ThrowawayUser:
    """A real system user (`rgtest` + digits) with a known password, removed (userdel -r) at cleanup,
    and a PAM service folder that checks it with pam_unix (reading /etc/shadow needs root).

    Attributes: name, password, home, confdir, service. nodelay=False keeps pam_unix's ~2 s delay
    after a failure.
    """

    def __init__(self, test, service="relaygate", nodelay=True, password=None):
        _require_pam_module("pam_unix.so")
        useradd, chpasswd, self._userdel = _sbin_tool("useradd"), _sbin_tool("chpasswd"), _sbin_tool("userdel")
        self.test = test
        self.service = service
        self.password = password if password is not None else "tw-" + secrets.token_hex(8)
        root = _workdir(test, "relaygate-user-")
        self.name = None
        for _ in range(20):
            name = "rgtest" + str(secrets.randbelow(10 ** 8)).zfill(8)
            home = os.path.join(root, name)
            r = _run([useradd, "--create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin",
                      "--user-group", name])
            if r.returncode == 0:
                self.name, self.home = name, home
                break
            if r.returncode != 9:  # 9: the name is taken; try another
                raise AssertionError(f"useradd failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        if self.name is None:
            raise AssertionError("useradd: no free rgtest name found")
        _add_cleanup(test, self._remove)
        _check([chpasswd], "chpasswd", input_bytes=f"{self.name}:{self.password}\n".encode("utf-8"))
        opt = " nodelay" if nodelay else ""
        self.confdir = os.path.join(root, "pam.d")
        os.makedirs(self.confdir, mode=0o755)
        with open(os.path.join(self.confdir, service), "w") as f:
            f.write(f"auth required pam_unix.so{opt}\naccount required pam_unix.so\n")

    @property
    def service_file(self):
        return os.path.join(self.confdir, self.service)

    def _remove(self):
        r = _run([self._userdel, "-r", self.name])
        # 12: the home folder could not be removed (already gone with the temp folder); the user is.
        if r.returncode not in (0, 12):
            raise AssertionError(f"userdel -r {self.name} failed ({r.returncode}): "
                                 f"{r.stderr.decode(errors='replace')}")


def _require_pam_module(name):
    for d in ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security",
              "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security", "/lib/security"):
        if os.path.exists(os.path.join(d, name)):
            return
    raise AssertionError(f"required PAM module '{name}' is not installed")

#!/usr/bin/env python3
"""Runs the same command lines through our ghostunnel and, when given, the reference binary,
and prints every difference in exit code, stderr and log lines.

    tools/compare.py --ours target/debug/ghostunnel [--reference /path/to/ghostunnel-1.11.1]
                     [--only SUBSTRING] [--show-same]

Without --reference it prints what ours does for each case. Both binaries run under the name
`ghostunnel` (a symlink in a scratch directory), with the same certificates (made here with the
`openssl` CLI), ports and files, and their output is normalized before comparing: the log
prefix (`[pid] date time`), port numbers, the scratch directory, times and durations. Runs
over loopback only; every run is bounded by a timeout. This is a development instrument, not
part of CI: the test suite pins the behaviour itself.
"""

import argparse
import difflib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SCRATCH = tempfile.mkdtemp(prefix="gt-compare-")


def sh(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def make_pki():
    d = os.path.join(SCRATCH, "pki")
    os.makedirs(d)
    p = lambda n: os.path.join(d, n)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30", "-subj", "/CN=ca",
       "-addext", "basicConstraints=critical,CA:TRUE")
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", p("other.key"), "-out", p("other.pem"), "-days", "30",
       "-subj", "/CN=other")

    def leaf(name, cn, san, ca="ca"):
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", "/CN=" + cn)
        with open(p(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" % san)
        sh("openssl", "x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".pem"),
           "-CAkey", p(ca + ".key"), "-set_serial", str(abs(hash(name)) % 100000),
           "-out", p(name + ".crt"), "-days", "30", "-extfile", p(name + ".ext"))
        with open(p(name + ".pem"), "w") as f:
            f.write(open(p(name + ".crt")).read() + open(p(name + ".key")).read())

    leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1")
    leaf("client", "client", "DNS:client")
    leaf("untrusted", "client", "DNS:client", ca="other")
    # A version 1 certificate: no extensions at all.
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", p("v1.key"), "-out", p("v1.csr"), "-subj", "/CN=client")
    sh("openssl", "x509", "-req", "-in", p("v1.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
       "-set_serial", "99", "-out", p("v1.crt"), "-days", "30")
    open(p("empty.pem"), "w").write("no certificates here\n")
    open(p("args"), "w").write("server\n--listen=127.0.0.1:{P1}\n")
    return d


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Each case: name, argv (after the binary), and what to do while it runs:
#   "exit": wait for it to exit by itself (bounded);
#   a list of actions: the daemon is started, waits for its listening line, the actions run,
#   then SIGTERM. Placeholders: {PKI} certificates, {P1}..{P4} free ports.
SRV = ["server", "--listen", "127.0.0.1:{P1}", "--target", "127.0.0.1:{P2}",
       "--keystore", "{PKI}/server.pem", "--cacert", "{PKI}/ca.pem"]
CLI = ["client", "--listen", "127.0.0.1:{P1}", "--target", "localhost:{P2}",
       "--keystore", "{PKI}/client.pem", "--cacert", "{PKI}/ca.pem"]

CASES = [
    ("help frob", ["help", "frob"], "exit"),
    ("top-level --help", ["--help"], "exit"),
    ("server --help", ["server", "--help"], "exit"),
    ("--no-help and --no-version", ["--no-help", "--no-version"] + SRV + ["--allow-all"], []),
    ("unresolvable target",
     SRV[:3] + ["--target", "nosuch.invalid:80"] + SRV[5:] + ["--allow-all", "--unsafe-target"], "exit"),
    ("listen port in use", SRV + ["--allow-all"], "busy-P1"),
    ("status port in use", SRV + ["--allow-all", "--status", "127.0.0.1:{P3}"], "busy-P3"),
    ("missing @file", ["@{PKI}/nonexistent"], "exit"),
    ("bad --allow-uri pattern", SRV + ["--allow-uri", "spiffe://a/**b"], "exit"),
    ("bad --max-tls-version", SRV + ["--allow-all", "--max-tls-version", "TLS1.1"], "exit"),
    ("--cacert without certificates", SRV[:7] + ["--cacert", "{PKI}/empty.pem", "--allow-all"], "exit"),
    ("unknown --proxy scheme", CLI + ["--proxy", "ftp://127.0.0.1:{P3}"], ["dial"]),
    ("--metrics-graphite parse error", SRV + ["--allow-all", "--metrics-graphite", "no-port"], "exit"),
    ("duration without unit", SRV + ["--allow-all", "--connect-timeout", "5"], "exit"),
    ("duration with unknown unit", SRV + ["--allow-all", "--connect-timeout", "1x"], "exit"),
    ("bad --quiet value", SRV + ["--allow-all", "--quiet", "bogus"], "exit"),
    ("PKCS11_PIN alone", SRV + ["--allow-all"], "env:PKCS11_PIN=1234"),
    ("PKCS11_TOKEN_LABEL alone", SRV + ["--allow-all"], "env:PKCS11_TOKEN_LABEL=t"),
    ("--use-workload-api-timeout alone", SRV + ["--allow-all", "--use-workload-api-timeout", "5s"], []),
    ("--enable-pprof without --status", SRV + ["--allow-all", "--enable-pprof"], "exit"),
    ("--enable-pprof with --status", SRV + ["--allow-all", "--enable-pprof", "--status", "http://127.0.0.1:{P3}"],
     ["pprof"]),
    ("--metrics-interval=0", SRV + ["--allow-all", "--status", "127.0.0.1:{P3}", "--metrics-interval=0"], []),
    ("server handshake failures",
     SRV + ["--allow-cn", "client", "--connect-timeout", "1s", "--shutdown-timeout", "2s"],
     ["no-cert", "untrusted", "v1", "tls11", "idle"]),
    ("plain HTTP to the HTTPS status port", SRV + ["--allow-all", "--status", "127.0.0.1:{P3}"], ["http-on-https"]),
]


def s_client(port, pki, *extra):
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", pki + "/ca.pem"]
    subprocess.run(args + list(extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10)


def action(name, ports, pki):
    p1 = ports["P1"]
    if name == "no-cert":
        s_client(p1, pki)
    elif name == "untrusted":
        s_client(p1, pki, "-cert", pki + "/untrusted.crt", "-key", pki + "/untrusted.key")
    elif name == "v1":
        s_client(p1, pki, "-tls1_2", "-cert", pki + "/v1.crt", "-key", pki + "/v1.key")
    elif name == "tls11":
        s_client(p1, pki, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    elif name == "idle":
        s = socket.create_connection(("127.0.0.1", p1))
        time.sleep(1.5)
        s.close()
    elif name == "dial":
        s = socket.create_connection(("127.0.0.1", p1))
        s.settimeout(3)
        try:
            s.recv(10)
        except OSError:
            pass
        s.close()
        time.sleep(0.3)
    elif name == "http-on-https":
        s = socket.create_connection(("127.0.0.1", ports["P3"]))
        s.sendall(b"GET /_status HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(3)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            data += ("<%s>" % e.__class__.__name__).encode()
        s.close()
        return "status port answered: %r" % data
    elif name == "pprof":
        out = []
        for path in ["/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"]:
            s = socket.create_connection(("127.0.0.1", ports["P3"]))
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            s.settimeout(3)
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode(errors="replace").split("\r\n")
            ctype = next((l.split(":", 1)[1].strip() for l in lines
                          if l.lower().startswith("content-type:")), "")
            if any(l.lower() == "transfer-encoding: chunked" for l in lines):
                body = body.split(b"\r\n", 1)[-1]
            first = body.split(b"\n")[0].decode(errors="replace") if ctype.startswith("text/") else "<binary>"
            out.append("%s -> %s [%s] %s" % (path, lines[0], ctype,
                                              re.sub(r"total \d+", "total N", first)))
        return "\n".join(out)
    return None


def normalize(text, ports, bindir):
    text = text.replace(bindir, "BINDIR").replace(SCRATCH, "SCRATCH")
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\[\d+\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} ", "", line)
        line = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "TIME ", line)
        for k, v in ports.items():
            line = re.sub(r"\b%d\b" % v, k, line)
        line = re.sub(r"127\.0\.0\.1:\d{4,5}\b", "127.0.0.1:EPHEMERAL", line)
        line = re.sub(r"\[::1\]:\d{4,5}\b", "[::1]:EPHEMERAL", line)
        line = re.sub(r"current time \S+", "current time T", line)
        line = re.sub(r"open [\d.]+(µs|ms|ns|s|m[\d.]+s)\]", "open D]", line)
        lines.append(line)
    return lines


def run_case(binary, bindir, case, pki):
    name, argv, mode = case
    ports = {"P%d" % i: free_port() for i in range(1, 5)}
    subst = lambda a: a.replace("{PKI}", pki).format(**ports) if "{" in a else a
    argv = [subst(a) for a in argv]
    env = dict(os.environ)
    for k in ["KEYSTORE_PATH", "CERT_PATH", "KEY_PATH", "KEYSTORE_PASS", "CACERT_PATH",
              "NOTIFY_SOCKET", "LISTEN_FDS", "PKCS11_PIN", "PKCS11_TOKEN_LABEL", "PKCS11_MODULE"]:
        env.pop(k, None)
    holders = []
    extra_out = []
    if isinstance(mode, str) and mode.startswith("env:"):
        k, v = mode[4:].split("=", 1)
        env[k] = v
        mode = []
    if isinstance(mode, str) and mode.startswith("busy-"):
        h = socket.socket()
        h.bind(("127.0.0.1", ports[mode[5:]]))
        h.listen(1)
        holders.append(h)
        mode = "exit"
    # Backend for server cases: accepts, says hello and closes.
    backend = socket.socket()
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    backend.bind(("127.0.0.1", ports["P2"]))
    backend.listen(16)
    backend.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = backend.accept()
            except OSError:
                continue
            try:
                c.sendall(b"hello\n")
            except OSError:
                pass
            c.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    out_path = os.path.join(SCRATCH, "out")
    err_path = os.path.join(SCRATCH, "err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([os.path.join(bindir, "ghostunnel")] + argv, stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, env=env)
        if mode == "exit":
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                code = "still running after 10 s (then SIGTERM: %s)" % proc.wait(timeout=10)
        else:
            deadline = time.time() + 5
            while time.time() < deadline and proc.poll() is None:
                if "listening for connections" in open(out_path).read():
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            for a in mode:
                if proc.poll() is not None:
                    break
                r = action(a, ports, pki)
                if r:
                    extra_out.append(r)
            time.sleep(0.3)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = "ran; %s after SIGTERM" % proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = "killed"
            else:
                code = proc.returncode
    stop.set()
    server.join()
    backend.close()
    for h in holders:
        h.close()
    stdout = open(out_path).read()
    stderr = open(err_path).read()
    return {
        "exit": str(code),
        "stderr": normalize(stderr, ports, bindir),
        "log": normalize(stdout, ports, bindir) + normalize("\n".join(extra_out), ports, bindir),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", required=True)
    ap.add_argument("--reference")
    ap.add_argument("--only")
    ap.add_argument("--show-same", action="store_true")
    a = ap.parse_args()
    pki = make_pki()
    bins = {}
    for label, path in [("ours", a.ours), ("reference", a.reference)]:
        if not path:
            continue
        d = os.path.join(SCRATCH, label)
        os.makedirs(d)
        os.symlink(os.path.abspath(path), os.path.join(d, "ghostunnel"))
        bins[label] = d
    differ = 0
    cases = [c for c in CASES if not a.only or a.only in c[0]]
    for case in cases:
        results = {label: run_case(label, d, case, pki) for label, d in bins.items()}
        print("=" * 78)
        print("case: %s" % case[0])
        if "reference" not in results:
            r = results["ours"]
            print("  exit: %s" % r["exit"])
            for k in ["stderr", "log"]:
                for line in r[k]:
                    print("  %s| %s" % (k, line))
            continue
        ref, ours = results["reference"], results["ours"]
        same = True
        if ref["exit"] != ours["exit"]:
            same = False
            print("  exit: reference %s, ours %s" % (ref["exit"], ours["exit"]))
        for k in ["stderr", "log"]:
            if ref[k] != ours[k]:
                same = False
                print("  --- %s (- reference, + ours)" % k)
                for line in difflib.unified_diff(ref[k], ours[k], lineterm="", n=1):
                    if line.startswith(("---", "+++")):
                        continue
                    print("  " + line)
            elif a.show_same:
                for line in ref[k]:
                    print("  %s| %s" % (k, line))
        if same:
            print("  identical (exit %s)" % ref["exit"])
        else:
            differ += 1
    print("=" * 78)
    if "reference" in bins:
        print("%d cases, %d identical, %d differ" % (len(cases), len(cases) - differ, differ))
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()

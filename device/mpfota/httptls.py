# TLS for mpfota.http, imported only when a URL is https: a plain-HTTP download never loads
# ssl or this module.
#
#     ctx = httptls.context(server_cert, client_cert, client_key, client_password)
#     sock = httptls.wrap(ctx, sock, host)
#
# Both raise ValueError or OSError with the cause; mpfota.http turns them into ERR_CONNECT.

NO_PASSWORD = (
    "encrypted client keys are not supported: MicroPython's ssl loads keys without a "
    "password; store the client key unencrypted (client_password must be empty)"
)


def der(data, what):
    # Certificates and keys as a list of DER blobs. PEM is decoded here because not every
    # MicroPython build has mbedTLS's PEM parser (the unix port's has none), while every
    # build takes DER. A str is data, never a file name (ssl.SSLContext would open it).
    import binascii

    if isinstance(data, str):
        data = data.encode()
    if b"-----BEGIN" not in data:
        return [bytes(data)]
    out = []
    pos = 0
    while True:
        a = data.find(b"-----BEGIN", pos)
        if a < 0:
            break
        b = data.find(b"\n", a)  # end of the BEGIN line
        e = data.find(b"-----END", a)
        if b < 0 or e < b:
            raise ValueError("%s: broken PEM" % what)
        if b"ENCRYPTED" in data[a:b] or b"Proc-Type:" in data[b:e]:
            raise ValueError(NO_PASSWORD)
        try:
            out.append(binascii.a2b_base64(data[b + 1 : e]))
        except ValueError:
            raise ValueError("%s: bad base64 in PEM" % what)
        pos = e + 8
    if not out:
        raise ValueError("%s: no PEM block" % what)
    return out


def context(server_cert, client_cert, client_key, client_password):
    # One SSLContext for a transaction (its redirect hops reuse it).
    if client_password:
        raise ValueError(NO_PASSWORD)
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if client_cert is not None or client_key is not None:
        if client_cert is None or client_key is None:
            raise ValueError("client_cert and client_key go together")
        # The first certificate is the client's own (no chain is sent).
        cert = der(client_cert, "client_cert")[0]
        ctx.load_cert_chain(cert, der(client_key, "client_key")[0])
    if server_cert is not None:
        for ca in der(server_cert, "server_cert"):
            ctx.load_verify_locations(cadata=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wrap(ctx, sock, host):
    # The handshake runs inside the first writes (mpfota.http's non-blocking send loop).
    return ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)

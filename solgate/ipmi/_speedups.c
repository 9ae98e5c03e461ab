/* Optional compiled twin of `solgate.ipmi.crypto.PacketProtector.unseal` / `.seal`.
 *
 * Theory of operation
 * -------------------
 * The pure-Python `PacketProtector` in crypto.py is the reference; this file does the
 * same bytes, checks and error messages for the two calls made once per SOL packet:
 * `unseal` (RMCP+ header checks, integrity trailer and HMAC, AES-CBC-128 decrypt and
 * confidentiality pad) and `seal` (AES-CBC-128 encrypt with the caller's IV, session
 * header, integrity pad and HMAC). Both implementations run against the same
 * known-answer tests, and a hypothesis test feeds both the same bytes and requires the
 * same bytes or the same `ProtocolError` message back (tests/test_speedups.py).
 *
 * Cryptography is OpenSSL's libcrypto (EVP), the same library `cryptography` wraps; only
 * the framing is written here. HMAC keeps two digest contexts keyed with K1 ^ ipad and
 * K1 ^ opad (RFC 2104) and copies them per message, as crypto.py does.
 *
 * `SolFastPath` (second half of this file) builds on the same code: while armed it owns
 * one console's replay window, outbound sequence number and SOL receive state, and takes
 * the common SOL data datagram in one call (solgate/ipmi/fastpath.py says when it is
 * armed; tests/test_fastpath.py runs it against the Python path on the same datagrams).
 *
 * `DatagramReader` (last) reads a shared UDP socket for the event loop: one recvmmsg per
 * wake-up, each datagram to its address's armed `SolFastPath` or to a Python fallback
 * (solgate/ipmi/udp_pool.py).
 *
 * If this file cannot be built (no compiler, no libssl-dev), setup.py skips it and
 * crypto.py runs alone; `solgate serve` says which path runs on its ready line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define HEADER_LEN 16
#define NEXT_HEADER 0x07
#define AUTH_TYPE_RMCPPLUS 0x06
#define PAYLOAD_ENCRYPTED 0x80
#define PAYLOAD_AUTHENTICATED 0x40
#define PAYLOAD_TYPE_MASK 0x3F
#define PAYLOAD_OEM_EXPLICIT 0x02
#define MAX_BLOCK 128 /* largest digest block size we use (SHA-256: 64) */

static const unsigned char RMCP_IPMI_HEADER[4] = {0x06, 0x00, 0xff, 0x07};

static PyObject *ProtocolError; /* solgate.errors.ProtocolError */

typedef struct {
    PyObject_HEAD
    const EVP_MD *md;     /* NULL: no integrity */
    int mac_len;
    EVP_MD_CTX *inner;    /* keyed with K1 ^ ipad */
    EVP_MD_CTX *outer;    /* keyed with K1 ^ opad */
    EVP_MD_CTX *scratch;
    int aes;              /* 1: AES-CBC-128 confidentiality */
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    int initialized;      /* __init__ ran: a second one is refused (keys are set once) */
} Protector;

static PyObject *
openssl_error(const char *what)
{
    PyErr_Format(PyExc_RuntimeError, "OpenSSL failed in %s", what);
    return NULL;
}

static void
Protector_dealloc(Protector *self)
{
    EVP_MD_CTX_free(self->inner);
    EVP_MD_CTX_free(self->outer);
    EVP_MD_CTX_free(self->scratch);
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Protector(digest: str | None, mac_len: int, k1: bytes, aes_key: bytes | None) */
static int
Protector_init(Protector *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"digest", "mac_len", "k1", "aes_key", NULL};
    const char *digest = NULL;
    int mac_len = 0;
    Py_buffer k1 = {NULL}, aes_key = {NULL};
    int ok = -1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ziy*z*", kwlist, &digest, &mac_len, &k1,
                                     &aes_key))
        return -1;
    /* Keys are set once: a second __init__ would leak the contexts, keep old keys where
     * the new ones are None, or leave a mix of old and new after a failure. */
    if (self->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "a Protector is initialised once");
        goto done;
    }
    self->initialized = 1;
    if (digest != NULL) {
        const EVP_MD *md = EVP_get_digestbyname(digest);
        unsigned char key[MAX_BLOCK], pad[MAX_BLOCK];
        int block, i;
        if (md == NULL) {
            PyErr_Format(PyExc_ValueError, "unknown digest %s", digest);
            goto done;
        }
        block = EVP_MD_get_block_size(md);
        if (block > MAX_BLOCK || mac_len <= 0 || mac_len > EVP_MD_get_size(md)) {
            PyErr_SetString(PyExc_ValueError, "unsupported digest or MAC length");
            goto done;
        }
        memset(key, 0, sizeof key);
        if (k1.len > block) {
            unsigned int n = 0;
            if (!EVP_Digest(k1.buf, (size_t)k1.len, key, &n, md, NULL)) {
                openssl_error("EVP_Digest");
                goto done;
            }
        } else {
            memcpy(key, k1.buf, (size_t)k1.len);
        }
        self->inner = EVP_MD_CTX_new();
        self->outer = EVP_MD_CTX_new();
        self->scratch = EVP_MD_CTX_new();
        if (!self->inner || !self->outer || !self->scratch) {
            PyErr_NoMemory();
            goto done;
        }
        for (i = 0; i < block; i++) pad[i] = key[i] ^ 0x36;
        if (!EVP_DigestInit_ex(self->inner, md, NULL)
            || !EVP_DigestUpdate(self->inner, pad, (size_t)block)) {
            openssl_error("HMAC key setup");
            goto done;
        }
        for (i = 0; i < block; i++) pad[i] = key[i] ^ 0x5c;
        if (!EVP_DigestInit_ex(self->outer, md, NULL)
            || !EVP_DigestUpdate(self->outer, pad, (size_t)block)) {
            openssl_error("HMAC key setup");
            goto done;
        }
        OPENSSL_cleanse(key, sizeof key);
        OPENSSL_cleanse(pad, sizeof pad);
        self->md = md;
        self->mac_len = mac_len;
    }
    if (aes_key.buf != NULL) {
        if (aes_key.len != 16) {
            PyErr_SetString(PyExc_ValueError, "the AES key is 16 bytes");
            goto done;
        }
        self->enc = EVP_CIPHER_CTX_new();
        self->dec = EVP_CIPHER_CTX_new();
        if (!self->enc || !self->dec) {
            PyErr_NoMemory();
            goto done;
        }
        if (!EVP_EncryptInit_ex(self->enc, EVP_aes_128_cbc(), NULL, aes_key.buf, NULL)
            || !EVP_DecryptInit_ex(self->dec, EVP_aes_128_cbc(), NULL, aes_key.buf, NULL)) {
            openssl_error("AES key setup");
            goto done;
        }
        EVP_CIPHER_CTX_set_padding(self->enc, 0);
        EVP_CIPHER_CTX_set_padding(self->dec, 0);
        self->aes = 1;
    }
    ok = 0;
done:
    PyBuffer_Release(&k1);
    if (aes_key.buf != NULL) PyBuffer_Release(&aes_key);
    return ok;
}

/* HMAC-K1(data) into out (full digest); 0 on OpenSSL failure. */
static int
auth_code(Protector *self, const unsigned char *data, size_t len, unsigned char *out)
{
    unsigned char inner[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_MD_CTX_copy_ex(self->scratch, self->inner)
        || !EVP_DigestUpdate(self->scratch, data, len)
        || !EVP_DigestFinal_ex(self->scratch, inner, &n)
        || !EVP_MD_CTX_copy_ex(self->scratch, self->outer)
        || !EVP_DigestUpdate(self->scratch, inner, n)
        || !EVP_DigestFinal_ex(self->scratch, out, &n))
        return 0;
    return 1;
}

static PyObject *
protocol_error(const char *message)
{
    PyErr_SetString(ProtocolError, message);
    return NULL;
}

static inline unsigned long
le32(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16
           | (unsigned long)p[3] << 24;
}

/* Why an RMCP+ datagram does not open: one code per `ProtocolError` message of crypto.py,
 * so `Protector.unseal` can raise the reference's words and `SolFastPath` can just say no. */
enum {
    U_OK = 0, U_SHORT, U_NOT_RMCP, U_AUTH_TYPE, U_OEM, U_LENGTH, U_UNAUTHENTICATED,
    U_TRAILER, U_TRAILER_FIELDS, U_INTEGRITY, U_UNEXPECTED_TRAILER, U_UNENCRYPTED,
    U_ENCRYPTED_LENGTH, U_PAD_LENGTH, U_PAD_BYTES, U_NO_CONFIDENTIALITY, U_OPENSSL_HMAC,
    U_OPENSSL_AES,
};

/* Raise the error `code` stands for (`value`: the number its message quotes). */
static PyObject *
unseal_error(int code, Py_ssize_t value)
{
    switch (code) {
    case U_SHORT:
        PyErr_Format(ProtocolError, "RMCP+ header: expected at least %d bytes, got %zd",
                     HEADER_LEN, value);
        return NULL;
    case U_NOT_RMCP: return protocol_error("not an RMCP IPMI-class packet");
    case U_AUTH_TYPE:
        PyErr_Format(ProtocolError, "auth type 0x%02x is not RMCP+", (unsigned)value);
        return NULL;
    case U_OEM: return protocol_error("OEM explicit payloads are not supported");
    case U_LENGTH: return protocol_error("RMCP+ payload length runs past the datagram");
    case U_UNAUTHENTICATED:
        return protocol_error("unauthenticated packet on an authenticated session");
    case U_TRAILER:
        PyErr_Format(ProtocolError, "session trailer of %zd bytes", value);
        return NULL;
    case U_TRAILER_FIELDS:
        return protocol_error("session trailer pad length or next header is wrong");
    case U_INTEGRITY: return protocol_error("integrity check failed");
    case U_UNEXPECTED_TRAILER: return protocol_error("unexpected session trailer");
    case U_UNENCRYPTED: return protocol_error("unencrypted payload on an encrypted session");
    case U_ENCRYPTED_LENGTH:
        PyErr_Format(ProtocolError, "encrypted payload of %zd bytes", value);
        return NULL;
    case U_PAD_LENGTH:
        PyErr_Format(ProtocolError, "confidentiality pad length %d", (int)value);
        return NULL;
    case U_PAD_BYTES: return protocol_error("confidentiality pad bytes are wrong");
    case U_NO_CONFIDENTIALITY:
        return protocol_error("encrypted payload on a session without confidentiality");
    case U_OPENSSL_HMAC: return openssl_error("HMAC");
    default: return openssl_error("AES decrypt");
    }
}

/* The checks before the payload: header, length, integrity trailer and HMAC. On U_OK,
 * *ptype (the whole byte), *seq and *length (of the payload at d + HEADER_LEN) are set. */
static int
unseal_frame(Protector *self, const unsigned char *d, Py_ssize_t n, unsigned *ptype,
             unsigned long *seq, Py_ssize_t *length, Py_ssize_t *value)
{
    Py_ssize_t end;
    if (n < HEADER_LEN) {
        *value = n;
        return U_SHORT;
    }
    if (memcmp(d, RMCP_IPMI_HEADER, 4) != 0)
        return U_NOT_RMCP;
    if (d[4] != AUTH_TYPE_RMCPPLUS) {
        *value = d[4];
        return U_AUTH_TYPE;
    }
    *ptype = d[5];
    if ((*ptype & PAYLOAD_TYPE_MASK) == PAYLOAD_OEM_EXPLICIT)
        return U_OEM;
    *seq = le32(d + 10);
    *length = (Py_ssize_t)d[14] | (Py_ssize_t)d[15] << 8;
    if (HEADER_LEN + *length > n)
        return U_LENGTH;
    end = HEADER_LEN + *length;
    if (self->md != NULL) {
        Py_ssize_t trailer = n - end, pad = trailer - 2 - self->mac_len, mac_at;
        unsigned char mac[EVP_MAX_MD_SIZE];
        if (!(*ptype & PAYLOAD_AUTHENTICATED))
            return U_UNAUTHENTICATED;
        if (pad < 0 || pad > 4) {
            *value = trailer;
            return U_TRAILER;
        }
        if (d[end + pad] != pad || d[end + pad + 1] != NEXT_HEADER)
            return U_TRAILER_FIELDS;
        mac_at = n - self->mac_len;
        if (!auth_code(self, d + 4, (size_t)(mac_at - 4), mac))
            return U_OPENSSL_HMAC;
        if (CRYPTO_memcmp(mac, d + mac_at, (size_t)self->mac_len) != 0)
            return U_INTEGRITY;
    } else if ((*ptype & PAYLOAD_AUTHENTICATED) || n != end) {
        return U_UNEXPECTED_TRAILER;
    }
    if (self->aes) {
        if (!(*ptype & PAYLOAD_ENCRYPTED))
            return U_UNENCRYPTED;
        if (*length < 32 || *length % 16) {
            *value = *length;
            return U_ENCRYPTED_LENGTH;
        }
    } else if (*ptype & PAYLOAD_ENCRYPTED) {
        return U_NO_CONFIDENTIALITY;
    }
    return U_OK;
}

/* AES-CBC-decrypt a payload of `length` bytes (IV first; checked by unseal_frame) into
 * `plain` (room for length - 16) and strip the confidentiality pad: *out is what is left. */
static int
unseal_decrypt(Protector *self, const unsigned char *payload, Py_ssize_t length,
               unsigned char *plain, Py_ssize_t *out, Py_ssize_t *value)
{
    int done = 0, npad, i;
    if (!EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, payload)
        || !EVP_DecryptUpdate(self->dec, plain, &done, payload + 16, (int)(length - 16))
        || done != length - 16)
        return U_OPENSSL_AES;
    npad = plain[done - 1];
    if (npad > 16 || npad + 1 > done) {
        *value = npad;
        return U_PAD_LENGTH;
    }
    for (i = 0; i < npad; i++) {
        if (plain[done - 1 - npad + i] != i + 1)
            return U_PAD_BYTES;
    }
    *out = done - 1 - npad;
    return U_OK;
}

/* unseal(datagram) -> (payload type, session sequence number, payload) */
static PyObject *
Protector_unseal(Protector *self, PyObject *arg)
{
    Py_buffer view;
    PyObject *result = NULL;
    Py_ssize_t length = 0, value = 0, out = 0;
    unsigned ptype = 0;
    unsigned long seq = 0;
    int code;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    code = unseal_frame(self, view.buf, view.len, &ptype, &seq, &length, &value);
    if (code != U_OK) {
        unseal_error(code, value);
    } else if (self->aes) {
        /* Decrypt straight into a bytes object, then shrink it to the payload. */
        PyObject *buf = PyBytes_FromStringAndSize(NULL, length - 16);
        if (buf == NULL)
            goto done;
        code = unseal_decrypt(self, (const unsigned char *)view.buf + HEADER_LEN, length,
                              (unsigned char *)PyBytes_AS_STRING(buf), &out, &value);
        if (code != U_OK) {
            Py_DECREF(buf);
            unseal_error(code, value);
            goto done;
        }
        if (_PyBytes_Resize(&buf, out) < 0)
            goto done;
        result = Py_BuildValue("(ikN)", ptype & PAYLOAD_TYPE_MASK, seq, buf);
    } else {
        result = Py_BuildValue("(iky#)", ptype & PAYLOAD_TYPE_MASK, seq,
                               (const char *)view.buf + HEADER_LEN, length);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static void
put_le32(unsigned char *p, unsigned long v)
{
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
    p[2] = (v >> 16) & 0xff;
    p[3] = (v >> 24) & 0xff;
}

/* The datagram `seal` returns, built from checked arguments (iv: 16 bytes, or NULL
 * without AES); NULL with an exception set on failure. */
static PyObject *
seal_datagram(Protector *self, unsigned char ptype, unsigned long sid, unsigned long seq,
              const unsigned char *payload, Py_ssize_t payload_len, const unsigned char *iv)
{
    PyObject *result;
    Py_ssize_t body_len, pad = 0, total;
    unsigned char *out, *body;

    if (self->aes) {
        body_len = 16 + (payload_len / 16 + 1) * 16;
        ptype |= PAYLOAD_ENCRYPTED;
    } else {
        body_len = payload_len;
    }
    if (body_len > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "payload too long for one RMCP+ packet");
        return NULL;
    }
    if (self->md != NULL) {
        ptype |= PAYLOAD_AUTHENTICATED;
        pad = (4 - ((12 + body_len + 2) % 4)) % 4;
        total = 4 + 12 + body_len + pad + 2 + self->mac_len;
    } else {
        total = 4 + 12 + body_len;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        return NULL;
    out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(out, RMCP_IPMI_HEADER, 4);
    out[4] = AUTH_TYPE_RMCPPLUS;
    out[5] = ptype;
    put_le32(out + 6, sid);
    put_le32(out + 10, seq);
    out[14] = body_len & 0xff;
    out[15] = (body_len >> 8) & 0xff;
    body = out + HEADER_LEN;
    if (self->aes) {
        /* IV, then AES-CBC(payload + 01 02 .. N + N), N = (15 - len % 16) % 16 */
        Py_ssize_t plain_len = body_len - 16, k = payload_len;
        int n = (int)((15 - payload_len % 16) % 16), done_len = 0, i;
        unsigned char *plain = body + 16;
        memcpy(body, iv, 16);
        memcpy(plain, payload, (size_t)payload_len);
        for (i = 1; i <= n; i++) plain[k++] = (unsigned char)i;
        plain[k] = (unsigned char)n;
        if (!EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, iv)
            || !EVP_EncryptUpdate(self->enc, plain, &done_len, plain, (int)plain_len)
            || done_len != plain_len) {
            Py_DECREF(result);
            return openssl_error("AES encrypt");
        }
    } else {
        memcpy(body, payload, (size_t)payload_len);
    }
    if (self->md != NULL) {
        unsigned char *trailer = body + body_len, mac[EVP_MAX_MD_SIZE];
        memset(trailer, 0xff, (size_t)pad);
        trailer[pad] = (unsigned char)pad;
        trailer[pad + 1] = NEXT_HEADER;
        if (!auth_code(self, out + 4, (size_t)(12 + body_len + pad + 2), mac)) {
            Py_DECREF(result);
            return openssl_error("HMAC");
        }
        memcpy(trailer + pad + 2, mac, (size_t)self->mac_len);
    }
    return result;
}

/* seal(payload_type, session_id, seq, payload, iv) -> datagram; iv is None without AES */
static PyObject *
Protector_seal(Protector *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long ptype_in, sid, seq;
    Py_buffer payload, iv = {NULL};
    PyObject *result = NULL;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "seal() takes 5 arguments");
        return NULL;
    }
    /* One at a time: a call with an exception already set is not allowed. */
    ptype_in = PyLong_AsUnsignedLong(args[0]);
    if (ptype_in == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    sid = PyLong_AsUnsignedLong(args[1]);
    if (sid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    seq = PyLong_AsUnsignedLong(args[2]);
    if (seq == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (ptype_in > 0xff || sid > 0xffffffffUL || seq > 0xffffffffUL) {
        PyErr_SetString(PyExc_OverflowError, "payload type, session ID or sequence out of range");
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    if (self->aes) {
        if (args[4] == Py_None || PyObject_GetBuffer(args[4], &iv, PyBUF_SIMPLE) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "an encrypting protector needs a 16-byte IV");
            goto done;
        }
        if (iv.len != 16) {
            PyErr_SetString(PyExc_ValueError, "the IV is 16 bytes");
            goto done;
        }
    }
    result = seal_datagram(self, (unsigned char)ptype_in, sid, seq, payload.buf, payload.len,
                           iv.buf);
done:
    PyBuffer_Release(&payload);
    if (iv.buf != NULL) PyBuffer_Release(&iv);
    return result;
}

static PyMethodDef Protector_methods[] = {
    {"unseal", (PyCFunction)Protector_unseal, METH_O,
     "unseal(datagram) -> (payload type, sequence number, payload); ProtocolError if bad."},
    {"seal", (PyCFunction)(void (*)(void))Protector_seal, METH_FASTCALL,
     "seal(payload_type, session_id, seq, payload, iv) -> datagram."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProtectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "solgate.ipmi._speedups.Protector",
    .tp_basicsize = sizeof(Protector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The per-packet half of PacketProtector: unseal and seal, in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Protector_init,
    .tp_dealloc = (destructor)Protector_dealloc,
    .tp_methods = Protector_methods,
};

/* ------------------------------------------------------------------------------------------
 * SolFastPath: one call per SOL data datagram (solgate/ipmi/fastpath.py is its Python half)
 *
 * While armed it owns one console's hot receive state: the session's replay window and
 * outbound sequence counter, and the SOL stream's receive state (last sequence taken, the
 * stale history). `receive(datagram)` takes the common datagram whole: the session ID,
 * unseal, the replay window, payload type SOL, a data packet (seq != 0) with no ACK field,
 * the BMC's flags as in its last packet and without break, overrun or NACK, a sequence
 * that is neither the last one nor a stale one. Then it takes the state forward exactly as
 * `ClientSession._receive_session_packet` and `SolStream.receive_payload` would, seals our
 * ACK as `SolStream._pump` and `ClientSession._seal` would, appends the characters to its
 * buffer and hands the ACK to `sendto(ack, addr)`, returning True. Anything else returns
 * False with nothing changed: the caller disarms (the state goes back to the Python
 * objects) and the Python path, the reference, runs on that datagram.
 *
 * Calls out to Python (sendto, wake, a test's iv_source) may do anything, disarm included:
 * they run on references of our own, after the state has moved or before anything has
 * (then a `generation` bump since makes receive decline). `arm` checks all it is given
 * before it writes, and refuses while armed or before __init__ (which runs once).
 * ---------------------------------------------------------------------------------------- */

#define SOL_PAYLOAD 0x01
#define SOL_MAX_PAYLOAD (4 + 255)
#define SOL_STALE_HISTORY 3
#define SOL_REFUSED_FLAGS 0x4C /* NACK, transmit overrun, break detected: the Python path */
#define IV_POOL 256 /* 16 IVs per RAND_bytes call; small, as there is one per console */

typedef struct {
    PyObject_HEAD
    Protector *prot;     /* NULL until __init__ (then never again): nothing runs without it */
    PyObject *iv_source; /* None: IVs from OpenSSL's RAND_bytes; else iv_source(16) (tests) */
    PyObject *wake;      /* wake(full): first packet of a batch (False), buffer past cap (True) */
    PyObject *sendto;    /* sendto(ack, addr), the datagram transport's */
    PyObject *addr;
    Py_ssize_t cap;
    int armed;
    /* Bumped by arm, disarm and every packet taken: a receive that called out to Python
     * (iv_source) goes on only if nothing moved meanwhile. */
    unsigned long long generation;
    unsigned long console_sid, bmc_sid;
    /* the replay window (replay.ReplayWindow) */
    int has_highest;
    unsigned long highest, ahead, behind;
    unsigned long long seen, mask;
    /* the outbound counter (replay.OutboundCounter) */
    unsigned long outbound;
    /* the SOL stream's receive half (sol.SolStream) */
    int rx_seq, rx_taken, rx_complete;
    int history[SOL_STALE_HISTORY], history_len; /* oldest first, as the deque */
    int peer_flags, status_flags;
    /* characters taken, not yet handed over */
    unsigned char *buf;
    Py_ssize_t len, alloc;
    int pending, full;
    unsigned long long handled, ack_failures;
    unsigned char ivs[IV_POOL];
    int iv_at;
} SolFastPath;

static int
SolFastPath_traverse(SolFastPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->prot);
    Py_VISIT(self->iv_source);
    Py_VISIT(self->wake);
    Py_VISIT(self->sendto);
    Py_VISIT(self->addr);
    return 0;
}

static int
SolFastPath_clear(SolFastPath *self)
{
    self->armed = 0; /* armed means sendto and addr are set */
    self->generation++;
    Py_CLEAR(self->prot);
    Py_CLEAR(self->iv_source);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->sendto);
    Py_CLEAR(self->addr);
    return 0;
}

static void
SolFastPath_dealloc(SolFastPath *self)
{
    PyObject_GC_UnTrack(self);
    SolFastPath_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* SolFastPath(protector, iv_source, wake, cap) */
static int
SolFastPath_init(SolFastPath *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"protector", "iv_source", "wake", "cap", NULL};
    PyObject *prot, *iv_source, *wake;
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOn", kwlist, &ProtectorType, &prot,
                                     &iv_source, &wake, &cap))
        return -1;
    /* Once: a new protector or callbacks under an armed state (or mid-receive) would mix
     * two sessions' keys. */
    if (self->prot != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a SolFastPath is initialised once");
        return -1;
    }
    if (cap < 1) {
        PyErr_SetString(PyExc_ValueError, "cap must be positive");
        return -1;
    }
    Py_INCREF(iv_source);
    self->iv_source = iv_source;
    Py_INCREF(wake);
    self->wake = wake;
    self->cap = cap;
    self->iv_at = IV_POOL;
    Py_INCREF(prot);
    self->prot = (Protector *)prot; /* last: prot != NULL says all of the above is set */
    return 0;
}

/* arm(sendto, addr, console_sid, bmc_sid, highest (None: no packet yet), seen, ahead,
 *     behind, outbound, rx_seq, history, rx_taken, rx_complete, peer_flags, status_flags)
 * Everything is checked before anything is written: a refused arm leaves it disarmed. */
static PyObject *
SolFastPath_arm(SolFastPath *self, PyObject *args)
{
    PyObject *sendto, *addr, *highest_in, *history_in;
    unsigned long console_sid, bmc_sid, ahead, behind, outbound, highest = 0;
    unsigned long long seen;
    int rx_seq, rx_taken, rx_complete, peer_flags, status_flags, i, has_highest = 0;
    int history[SOL_STALE_HISTORY];
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOkkOKkkkiO!ipii", &sendto, &addr, &console_sid, &bmc_sid,
                          &highest_in, &seen, &ahead, &behind, &outbound, &rx_seq,
                          &PyTuple_Type, &history_in, &rx_taken, &rx_complete, &peer_flags,
                          &status_flags))
        return NULL;
    if (self->prot == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path was not initialised");
        return NULL;
    }
    if (self->armed) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path is armed already");
        return NULL;
    }
    n = PyTuple_GET_SIZE(history_in);
    if (ahead > 63 || behind > 62 || n > SOL_STALE_HISTORY || rx_seq < 0 || rx_seq > 15
        || rx_taken < 0 || console_sid > 0xffffffffUL || bmc_sid > 0xffffffffUL
        || outbound > 0xffffffffUL || peer_flags < 0 || peer_flags > 0xff
        || status_flags < 0 || status_flags > 0xff)
        goto out_of_range;
    for (i = 0; i < n; i++) {
        long v = PyLong_AsLong(PyTuple_GET_ITEM(history_in, i));
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 1 || v > 15) /* only packets taken (sequence 1..15) enter the history */
            goto out_of_range;
        history[i] = (int)v;
    }
    if (highest_in != Py_None) {
        highest = PyLong_AsUnsignedLong(highest_in);
        if (highest == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        if (highest < 1 || highest > 0xffffffffUL) /* the window never holds 0 */
            goto out_of_range;
        has_highest = 1;
    }
    /* All checked: commit. */
    Py_INCREF(sendto);
    Py_XSETREF(self->sendto, sendto);
    Py_INCREF(addr);
    Py_XSETREF(self->addr, addr);
    memcpy(self->history, history, sizeof(int) * (size_t)n);
    self->history_len = (int)n;
    self->has_highest = has_highest;
    self->highest = highest;
    self->console_sid = console_sid;
    self->bmc_sid = bmc_sid;
    self->ahead = ahead;
    self->behind = behind;
    self->mask = (1ULL << (behind + 1)) - 1;
    self->seen = seen & self->mask;
    self->outbound = outbound;
    self->rx_seq = rx_seq;
    self->rx_taken = rx_taken;
    self->rx_complete = rx_complete;
    self->peer_flags = peer_flags;
    self->status_flags = status_flags;
    self->generation++;
    self->armed = 1;
    Py_RETURN_NONE;
out_of_range:
    PyErr_SetString(PyExc_ValueError, "state out of the fast path's range");
    return NULL;
}

/* disarm() -> (highest, seen, outbound, rx_seq, history, rx_taken, rx_complete): the
 * state to copy back into the Python objects; the buffer stays for `take`. The result is
 * built first: if that fails (memory) it stays armed with its state. */
static PyObject *
SolFastPath_disarm(SolFastPath *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *history, *highest, *result;
    int i;
    if (!self->armed) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path is not armed");
        return NULL;
    }
    history = PyTuple_New(self->history_len);
    if (history == NULL)
        return NULL;
    for (i = 0; i < self->history_len; i++) {
        PyObject *v = PyLong_FromLong(self->history[i]);
        if (v == NULL) {
            Py_DECREF(history);
            return NULL;
        }
        PyTuple_SET_ITEM(history, i, v);
    }
    if (self->has_highest) {
        highest = PyLong_FromUnsignedLong(self->highest);
        if (highest == NULL) {
            Py_DECREF(history);
            return NULL;
        }
    } else {
        Py_INCREF(Py_None);
        highest = Py_None;
    }
    /* "N" steals both references, also when the build fails. */
    result = Py_BuildValue("(NKkiNiO)", highest, self->seen, self->outbound, self->rx_seq,
                           history, self->rx_taken, self->rx_complete ? Py_True : Py_False);
    if (result == NULL)
        return NULL;
    self->armed = 0;
    self->generation++;
    Py_CLEAR(self->sendto); /* last: a finaliser may run here */
    Py_CLEAR(self->addr);
    return result;
}

/* take() -> the characters buffered since the last take, or None if no packet was taken
 * since then; the next packet wakes the owner again. */
static PyObject *
SolFastPath_take(SolFastPath *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *data;
    if (!self->pending)
        Py_RETURN_NONE;
    data = PyBytes_FromStringAndSize(self->len ? (const char *)self->buf : "", self->len);
    if (data == NULL)
        return NULL;
    /* The buffer goes with the batch: an idle console keeps none (thousands of them). */
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->alloc = self->len = 0;
    self->pending = self->full = 0;
    return data;
}

/* The window's verdict on seq (replay.ReplayWindow.check); *fwd, *back for accept. */
static int
window_check(SolFastPath *self, unsigned long seq, unsigned long *fwd, unsigned long *back)
{
    if (seq == 0)
        return 0;
    if (!self->has_highest)
        return 1;
    *fwd = (seq - self->highest) & 0xffffffffUL;
    if (*fwd >= 1 && *fwd <= self->ahead)
        return 1;
    *back = (self->highest - seq) & 0xffffffffUL;
    return *back >= 1 && *back <= self->behind && !((self->seen >> *back) & 1);
}

/* The next 16-byte IV. With an iv_source (tests) this calls Python: the caller must
 * re-check `generation` afterwards. */
static int
next_iv(SolFastPath *self, unsigned char *iv)
{
    if (self->iv_source != Py_None) {
        Py_buffer view;
        PyObject *source = self->iv_source, *got;
        Py_INCREF(source);
        got = PyObject_CallFunction(source, "i", 16);
        Py_DECREF(source);
        if (got == NULL)
            return -1;
        if (PyObject_GetBuffer(got, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(got);
            return -1;
        }
        if (view.len != 16) {
            PyBuffer_Release(&view);
            Py_DECREF(got);
            PyErr_SetString(PyExc_ValueError, "the IV is 16 bytes");
            return -1;
        }
        memcpy(iv, view.buf, 16);
        PyBuffer_Release(&view);
        Py_DECREF(got);
        return 0;
    }
    if (self->iv_at + 16 > IV_POOL) {
        if (RAND_bytes(self->ivs, IV_POOL) != 1) {
            openssl_error("RAND_bytes");
            return -1;
        }
        self->iv_at = 0;
    }
    memcpy(iv, self->ivs + self->iv_at, 16);
    self->iv_at += 16;
    return 0;
}

/* receive(datagram) -> True (taken, buffered, ACK handed to sendto) or False (nothing
 * changed).
 *
 * Order matters: every check, the IV (which may call Python), the buffer's room and the
 * sealed ACK come first, and any failure there leaves the state as it was. Then the state
 * moves and the packet is marked pending, with no call in between. Only then the calls
 * out: sendto, then wake. A sendto that raises an Exception (a transport closed under us:
 * asyncio raises AttributeError then; DatagramReader's BlockingIOError, a send that would
 * block) is swallowed and counted in `ack_failures`: the
 * packet is taken, so its characters must still come out in order, and a lost ACK is
 * what the protocol already handles (the BMC resends and the Python path ACKs the
 * duplicate); raising instead would end `SharedSocket.datagram_received` and leave the
 * rest of that wake-up's datagrams on the socket. A BaseException (KeyboardInterrupt) is
 * raised, after wake. */
static PyObject *
SolFastPath_receive(SolFastPath *self, PyObject *arg)
{
    const unsigned char *d, *sol;
    unsigned char plain[SOL_MAX_PAYLOAD + 32], ack[4], iv[16];
    Py_ssize_t n, length = 0, value = 0, plen, chars;
    unsigned ptype = 0;
    unsigned long seq = 0, fwd = 0, back = 0, outbound;
    unsigned long long generation;
    int sol_seq, i, first, crossed;
    PyObject *datagram, *r, *sendto, *addr, *wake;
    PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL;

    if (!self->armed || self->prot == NULL || !PyBytes_Check(arg))
        Py_RETURN_FALSE;
    d = (const unsigned char *)PyBytes_AS_STRING(arg);
    n = PyBytes_GET_SIZE(arg);
    /* ClientSession.receive_datagram: RMCP+, then our session ID */
    if (n < HEADER_LEN || d[4] != AUTH_TYPE_RMCPPLUS || le32(d + 6) != self->console_sid)
        Py_RETURN_FALSE;
    if (unseal_frame(self->prot, d, n, &ptype, &seq, &length, &value) != U_OK)
        Py_RETURN_FALSE;
    if ((ptype & PAYLOAD_TYPE_MASK) != SOL_PAYLOAD || !window_check(self, seq, &fwd, &back))
        Py_RETURN_FALSE;
    if (self->prot->aes) {
        if (length - 16 > (Py_ssize_t)sizeof plain
            || unseal_decrypt(self->prot, d + HEADER_LEN, length, plain, &plen, &value) != U_OK)
            Py_RETURN_FALSE;
        sol = plain;
    } else {
        sol = d + HEADER_LEN;
        plen = length;
    }
    /* SolStream.receive_payload: a data packet, no ACK field, flags as before */
    if (plen < 4 || plen > SOL_MAX_PAYLOAD)
        Py_RETURN_FALSE;
    chars = plen - 4;
    sol_seq = sol[0] & 0x0F;
    if (sol_seq == 0 || (sol[1] & 0x0F) != 0 || sol[3] != self->peer_flags
        || (sol[3] & SOL_REFUSED_FLAGS) || sol_seq == self->rx_seq)
        Py_RETURN_FALSE;
    for (i = 0; i < self->history_len; i++) {
        if (self->history[i] == sol_seq)
            Py_RETURN_FALSE;
    }
    if (self->prot->aes) {
        generation = self->generation;
        if (next_iv(self, iv) < 0)
            return NULL;
        /* iv_source may have disarmed, re-armed, taken a packet or the buffer: what was
         * checked above may no longer hold. Nothing has moved yet: decline. */
        if (!self->armed || self->generation != generation)
            Py_RETURN_FALSE;
    }
    if (chars > 0 && self->len + chars > self->alloc) {
        Py_ssize_t want = self->alloc ? self->alloc : 1024;
        unsigned char *grown;
        while (want < self->len + chars)
            want *= 2;
        grown = PyMem_Realloc(self->buf, (size_t)want);
        if (grown == NULL)
            return PyErr_NoMemory();
        self->buf = grown;
        self->alloc = want;
    }
    /* Our ACK (SolStream._pump, ClientSession._seal), sealed before anything moves */
    ack[0] = 0;
    ack[1] = (unsigned char)sol_seq;
    ack[2] = (unsigned char)chars;
    ack[3] = (unsigned char)self->status_flags;
    outbound = (self->outbound + 1) & 0xffffffffUL;
    if (outbound == 0)
        outbound = 1;
    datagram = seal_datagram(self->prot, SOL_PAYLOAD, self->bmc_sid, outbound, ack, 4,
                             self->prot->aes ? iv : NULL);
    if (datagram == NULL)
        return NULL;
    /* Accepted: the window (ReplayWindow.accept) ... */
    if (!self->has_highest) {
        self->has_highest = 1;
        self->highest = seq;
        self->seen = 1;
    } else if (fwd >= 1 && fwd <= self->ahead) {
        self->seen = ((self->seen << fwd) | 1) & self->mask;
        self->highest = seq;
    } else {
        self->seen |= 1ULL << back;
    }
    /* ... the stream's receive half (SolStream._handle_data) ... */
    if (self->rx_seq) {
        if (self->history_len == SOL_STALE_HISTORY) {
            self->history[0] = self->history[1];
            self->history[1] = self->history[2];
            self->history_len--;
        }
        self->history[self->history_len++] = self->rx_seq;
    }
    self->rx_seq = sol_seq;
    self->rx_taken = (int)chars;
    self->rx_complete = 1;
    if (chars > 0) { /* buf may be NULL (freed by take) when there are none */
        memcpy(self->buf + self->len, sol + 4, (size_t)chars);
        self->len += chars;
    }
    self->outbound = outbound;
    self->handled++;
    self->generation++;
    first = !self->pending;
    crossed = !self->full && self->len >= self->cap;
    self->pending = 1;
    if (crossed)
        self->full = 1;
    /* ... then the calls out, on references of our own (they may disarm us). */
    sendto = self->sendto;
    addr = self->addr;
    Py_INCREF(sendto);
    Py_INCREF(addr);
    r = PyObject_CallFunctionObjArgs(sendto, datagram, addr, NULL);
    Py_DECREF(sendto);
    Py_DECREF(addr);
    Py_DECREF(datagram);
    if (r != NULL) {
        Py_DECREF(r);
    } else {
        self->ack_failures++;
        if (PyErr_ExceptionMatches(PyExc_Exception))
            PyErr_Clear();
        else
            PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    }
    if (first || crossed) {
        wake = self->wake;
        Py_INCREF(wake);
        r = PyObject_CallOneArg(wake, crossed ? Py_True : Py_False);
        Py_DECREF(wake);
        if (r == NULL) {
            /* The owner could not be told (its loop is closed): say so. The characters
             * wait for its take (disarm flushes). */
            if (exc_type != NULL) { /* the BaseException from sendto wins */
                PyErr_Clear();
                PyErr_Restore(exc_type, exc_value, exc_tb);
            }
            return NULL;
        }
        Py_DECREF(r);
    }
    if (exc_type != NULL) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
SolFastPath_get_armed(SolFastPath *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->armed);
}

static PyObject *
SolFastPath_get_handled(SolFastPath *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->handled);
}

static PyObject *
SolFastPath_get_ack_failures(SolFastPath *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ack_failures);
}

static PyObject *
SolFastPath_get_buffered(SolFastPath *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->len);
}

static PyGetSetDef SolFastPath_getset[] = {
    {"armed", (getter)SolFastPath_get_armed, NULL, "whether receive() may take packets", NULL},
    {"handled", (getter)SolFastPath_get_handled, NULL, "packets taken, over its life", NULL},
    {"buffered", (getter)SolFastPath_get_buffered, NULL, "characters not yet taken", NULL},
    {"ack_failures", (getter)SolFastPath_get_ack_failures, NULL,
     "ACKs whose sendto raised (taken all the same: the BMC resends)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef SolFastPath_methods[] = {
    {"arm", (PyCFunction)SolFastPath_arm, METH_VARARGS,
     "arm(sendto, addr, console_sid, bmc_sid, highest, seen, ahead, behind, outbound, "
     "rx_seq, history, rx_taken, rx_complete, peer_flags, status_flags): own the state."},
    {"disarm", (PyCFunction)SolFastPath_disarm, METH_NOARGS,
     "disarm() -> (highest, seen, outbound, rx_seq, history, rx_taken, rx_complete)."},
    {"receive", (PyCFunction)SolFastPath_receive, METH_O,
     "receive(datagram) -> whether it was taken (False: nothing changed)."},
    {"take", (PyCFunction)SolFastPath_take, METH_NOARGS,
     "take() -> the characters buffered, or None if no packet came since the last take."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SolFastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "solgate.ipmi._speedups.SolFastPath",
    .tp_basicsize = sizeof(SolFastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One console's SOL data datagrams, one call each (see solgate/ipmi/fastpath.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SolFastPath_init,
    .tp_dealloc = (destructor)SolFastPath_dealloc,
    .tp_traverse = (traverseproc)SolFastPath_traverse,
    .tp_clear = (inquiry)SolFastPath_clear,
    .tp_methods = SolFastPath_methods,
    .tp_getset = SolFastPath_getset,
};

/* DatagramReader: a shared UDP socket read in C (solgate/ipmi/udp_pool.py).
 *
 * Registered with `loop.add_reader(fd, reader)`: per wake-up it reads up to `bound`
 * datagrams with recvmmsg (one system call for all that wait, none that fails), hands
 * each one from an armed `SolFastPath`'s address straight to it, and everything else
 * (declined, another session's handshake, a stray) to `fallback(data, addr)` with addr
 * spelled as the socket module does. Addresses are matched as raw bytes, so a datagram
 * of the fast path builds no Python string or tuple; `sendto(data, sockaddr)` sends on
 * the fd with a sockaddr made once by `sockaddr(addr)`.
 */
#include <errno.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define READER_SLOTS 64
#define READER_SLOT_SIZE 4096 /* an IPMI datagram is a few hundred bytes */

/* The key holds no family and no IPv6 scope ID: a socket carries one family, and the
 * pool never puts two sessions with one (address, port) on one socket (udp_pool._find),
 * so one link-local address behind two interfaces is two sockets. */
typedef struct {
    unsigned char key[18]; /* address (4 or 16 bytes), then the port */
    PyObject *fast;
} ReaderEntry;

typedef struct {
    PyObject_HEAD
    int fd;
    int bound;
    PyObject *fallback;
    PyObject *on_error;
    ReaderEntry *entries;
    Py_ssize_t n_entries, alloc;
    unsigned long long received, fast_taken, send_dropped, errors, truncated;
} DatagramReader;

/* One receive buffer for all readers: the GIL is held while it is claimed, and a reader
 * that finds it taken (another thread's loop ran Python code mid-batch) allocates. */
static unsigned char *reader_buffer;
static int reader_buffer_busy;

static int
reader_key(const struct sockaddr *sa, unsigned char *key)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memset(key, 0, 18);
        memcpy(key, &in->sin_addr, 4);
        memcpy(key + 16, &in->sin_port, 2);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(key, &in6->sin6_addr, 16);
        memcpy(key + 16, &in6->sin6_port, 2);
        return 0;
    }
    return -1;
}

/* The sockaddr bytes of a (host, port) or (host, port, flowinfo, scope_id) of numeric
 * hosts (numeric_address spells them so); ValueError otherwise. */
static PyObject *
reader_sockaddr(PyObject *addr)
{
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2) {
        PyErr_SetString(PyExc_ValueError, "an address is a (host, port, ...) tuple");
        return NULL;
    }
    if (!PyArg_ParseTuple(addr, "si|II", &host, &port, &flowinfo, &scope_id))
        return NULL;
    if (port < 0 || port > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    if (PyTuple_GET_SIZE(addr) == 2) {
        struct sockaddr_in in;
        memset(&in, 0, sizeof in);
        in.sin_family = AF_INET;
        in.sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &in.sin_addr) == 1)
            return PyBytes_FromStringAndSize((const char *)&in, sizeof in);
    } else {
        struct sockaddr_in6 in6;
        memset(&in6, 0, sizeof in6);
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons((unsigned short)port);
        in6.sin6_flowinfo = htonl(flowinfo);
        in6.sin6_scope_id = scope_id;
        if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1)
            return PyBytes_FromStringAndSize((const char *)&in6, sizeof in6);
    }
    PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
    return NULL;
}

/* The address as the socket module spells a datagram's source. */
static PyObject *
reader_address(const struct sockaddr *sa)
{
    char text[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", text, (int)ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", text, (int)ntohs(in6->sin6_port),
                             (unsigned int)ntohl(in6->sin6_flowinfo),
                             (unsigned int)in6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static int
DatagramReader_traverse(DatagramReader *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    Py_VISIT(self->fallback);
    Py_VISIT(self->on_error);
    for (i = 0; i < self->n_entries; i++)
        Py_VISIT(self->entries[i].fast);
    return 0;
}

/* Let go of the whole fast table. The array is taken out first: a finaliser run by a
 * DECREF may call set_fast, which must not write into the slots still being let go. */
static void
reader_drop_table(DatagramReader *self)
{
    ReaderEntry *entries = self->entries;
    Py_ssize_t i, n = self->n_entries;
    self->entries = NULL;
    self->n_entries = self->alloc = 0;
    for (i = 0; i < n; i++)
        Py_DECREF(entries[i].fast);
    PyMem_Free(entries);
}

static int
DatagramReader_clear(DatagramReader *self)
{
    reader_drop_table(self);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
DatagramReader_dealloc(DatagramReader *self)
{
    PyObject_GC_UnTrack(self);
    DatagramReader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A reader made without __init__ (DatagramReader.__new__) reads and sends nothing: fd 0,
 * stdin, with no fallback or on_error to call would crash on the first error. */
static PyObject *
DatagramReader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    DatagramReader *self = (DatagramReader *)PyType_GenericNew(type, args, kwds);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

/* DatagramReader(fd, fallback, on_error, bound) */
static int
DatagramReader_init(DatagramReader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "fallback", "on_error", "bound", NULL};
    PyObject *fallback, *on_error;
    int fd, bound = READER_SLOTS;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|i", kwlist, &fd, &fallback, &on_error,
                                     &bound))
        return -1;
    if (bound < 1) {
        PyErr_SetString(PyExc_ValueError, "bound must be positive");
        return -1;
    }
    self->fd = fd;
    self->bound = bound;
    Py_INCREF(fallback);
    Py_XSETREF(self->fallback, fallback);
    Py_INCREF(on_error);
    Py_XSETREF(self->on_error, on_error);
    return 0;
}

static Py_ssize_t
reader_find(DatagramReader *self, const unsigned char *key)
{
    Py_ssize_t i;
    for (i = 0; i < self->n_entries; i++) {
        if (memcmp(self->entries[i].key, key, 18) == 0)
            return i;
    }
    return -1;
}

/* The key of sockaddr() bytes; each family's length is checked before its fields are
 * read (16 bytes that say AF_INET6 would otherwise be read as 28). */
static int
reader_key_of(PyObject *raw, unsigned char *key)
{
    sa_family_t family;
    Py_ssize_t need;
    if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) < (Py_ssize_t)sizeof family)
        goto bad;
    memcpy(&family, PyBytes_AS_STRING(raw), sizeof family);
    if (family == AF_INET)
        need = (Py_ssize_t)sizeof(struct sockaddr_in);
    else if (family == AF_INET6)
        need = (Py_ssize_t)sizeof(struct sockaddr_in6);
    else
        goto bad;
    if (PyBytes_GET_SIZE(raw) < need
        || reader_key((const struct sockaddr *)PyBytes_AS_STRING(raw), key) < 0)
        goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not a sockaddr from sockaddr()");
    return -1;
}

/* set_fast(sockaddr, fast or None): route that address's datagrams to fast first. A
 * closed reader arms nothing (its table was let go; nothing would ever clear it). */
static PyObject *
DatagramReader_set_fast(DatagramReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[18];
    Py_ssize_t at;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_fast(sockaddr, fast)");
        return NULL;
    }
    if (reader_key_of(args[0], key) < 0)
        return NULL;
    at = reader_find(self, key);
    if (args[1] == Py_None) {
        if (at >= 0) {
            PyObject *old = self->entries[at].fast;
            self->entries[at] = self->entries[--self->n_entries];
            Py_DECREF(old);
        }
        Py_RETURN_NONE;
    }
    if (self->fd < 0)
        Py_RETURN_NONE;
    Py_INCREF(args[1]);
    if (at >= 0) {
        Py_SETREF(self->entries[at].fast, args[1]);
        Py_RETURN_NONE;
    }
    if (self->n_entries == self->alloc) {
        Py_ssize_t want = self->alloc ? self->alloc * 2 : 8;
        ReaderEntry *grown = PyMem_Realloc(self->entries, (size_t)want * sizeof *grown);
        if (grown == NULL) {
            Py_DECREF(args[1]);
            return PyErr_NoMemory();
        }
        self->entries = grown;
        self->alloc = want;
    }
    memcpy(self->entries[self->n_entries].key, key, 18);
    self->entries[self->n_entries++].fast = args[1];
    Py_RETURN_NONE;
}

/* sendto(data, sockaddr): one datagram on the fd. One that would block is dropped,
 * counted and raised as BlockingIOError, so a SolFastPath counts its ACK as failed (the
 * BMC resends) and Port.sendto drops it quietly; other errors go to on_error. */
static PyObject *
DatagramReader_sendto(DatagramReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    const struct sockaddr *sa;
    ssize_t sent;
    if (nargs != 2 || !PyBytes_Check(args[1])
        || PyBytes_GET_SIZE(args[1]) < (Py_ssize_t)sizeof(struct sockaddr_in)) {
        PyErr_SetString(PyExc_TypeError, "sendto(data, sockaddr)");
        return NULL;
    }
    if (self->fd < 0)
        Py_RETURN_NONE;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    sa = (const struct sockaddr *)PyBytes_AS_STRING(args[1]);
    do {
        sent = sendto(self->fd, data.buf, (size_t)data.len, MSG_DONTWAIT, sa,
                      (socklen_t)PyBytes_GET_SIZE(args[1]));
    } while (sent < 0 && errno == EINTR);
    PyBuffer_Release(&data);
    if (sent < 0) {
        PyObject *exc, *r;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            self->send_dropped++;
            exc = PyObject_CallFunction(PyExc_BlockingIOError, "is", errno, strerror(errno));
            if (exc != NULL) {
                PyErr_SetObject(PyExc_BlockingIOError, exc);
                Py_DECREF(exc);
            }
            return NULL;
        }
        self->errors++;
        exc = PyObject_CallFunction(PyExc_OSError, "is", errno, strerror(errno));
        if (exc == NULL)
            return NULL;
        r = PyObject_CallOneArg(self->on_error, exc);
        Py_DECREF(exc);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* One datagram: its armed fast path, else (or if declined) the fallback. 0, or -1 with
 * an exception set. */
static int
reader_dispatch(DatagramReader *self, const unsigned char *buf, size_t len,
                const struct sockaddr *sa)
{
    unsigned char key[18];
    PyObject *data, *fast = NULL, *r, *addr;
    Py_ssize_t at = -1;
    data = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
    if (data == NULL)
        return -1;
    if (self->n_entries && reader_key(sa, key) == 0 && (at = reader_find(self, key)) >= 0) {
        fast = self->entries[at].fast;
        Py_INCREF(fast);
        if (Py_IS_TYPE(fast, &SolFastPathType))
            r = SolFastPath_receive((SolFastPath *)fast, data);
        else
            r = PyObject_CallMethod(fast, "receive", "O", data);
        Py_DECREF(fast);
        if (r == NULL) {
            Py_DECREF(data);
            return -1;
        }
        if (r == Py_True) {
            Py_DECREF(r);
            Py_DECREF(data);
            self->fast_taken++;
            return 0;
        }
        Py_DECREF(r);
    }
    addr = reader_address(sa);
    if (addr == NULL) {
        Py_DECREF(data);
        return -1;
    }
    r = PyObject_CallFunctionObjArgs(self->fallback, data, addr, NULL);
    Py_DECREF(addr);
    Py_DECREF(data);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* reader(): what waits on the socket, up to `bound` datagrams (the loop calls it). */
static PyObject *
DatagramReader_call(DatagramReader *self, PyObject *args, PyObject *kwds)
{
    struct mmsghdr msgs[READER_SLOTS];
    struct iovec iov[READER_SLOTS];
    struct sockaddr_storage from[READER_SLOTS];
    unsigned char *buf;
    int own = 0, total = 0, i, n, want, stop = 0, failed = 0;
    PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL;

    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "a DatagramReader takes no arguments");
        return NULL;
    }
    if (self->fd < 0)
        Py_RETURN_NONE;
    if (reader_buffer == NULL) {
        reader_buffer = PyMem_RawMalloc((size_t)READER_SLOTS * READER_SLOT_SIZE);
        if (reader_buffer == NULL)
            return PyErr_NoMemory();
    }
    if (reader_buffer_busy) {
        buf = PyMem_Malloc((size_t)READER_SLOTS * READER_SLOT_SIZE);
        if (buf == NULL)
            return PyErr_NoMemory();
        own = 1;
    } else {
        buf = reader_buffer;
        reader_buffer_busy = 1;
    }
    while (!stop && total < self->bound && self->fd >= 0) {
        want = self->bound - total;
        if (want > READER_SLOTS)
            want = READER_SLOTS;
        for (i = 0; i < want; i++) {
            iov[i].iov_base = buf + (size_t)i * READER_SLOT_SIZE;
            iov[i].iov_len = READER_SLOT_SIZE;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        n = recvmmsg(self->fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            PyObject *exc, *r;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            /* ICMP news (ECONNREFUSED...) of an earlier send: counted, reported, and the
             * datagrams behind it read. The kernel reports such news once, so a second
             * error in a row is the socket's own (EBADF, ENOTSOCK): it ends the wake-up
             * instead of being reported `bound` times. */
            self->errors++;
            total++;
            exc = PyObject_CallFunction(PyExc_OSError, "is", errno, strerror(errno));
            if (exc == NULL)
                break;
            r = PyObject_CallOneArg(self->on_error, exc);
            Py_DECREF(exc);
            if (r == NULL)
                break;
            Py_DECREF(r);
            if (failed)
                break;
            failed = 1;
            continue;
        }
        failed = 0;
        if (n < want)
            stop = 1; /* the socket is empty: no read that would only fail */
        total += n;
        for (i = 0; i < n; i++) {
            if (self->fd < 0)
                break; /* closed by a callback: the rest of the batch goes with the socket */
            self->received++;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                self->truncated++;
                continue;
            }
            if (reader_dispatch(self, buf + (size_t)i * READER_SLOT_SIZE, msgs[i].msg_len,
                                (const struct sockaddr *)&from[i]) < 0) {
                /* Keep the first error for the loop's handler; the rest are delivered. */
                if (exc_type == NULL)
                    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
                else
                    PyErr_Clear();
            }
        }
    }
    if (own)
        PyMem_Free(buf);
    else
        reader_buffer_busy = 0;
    if (exc_type != NULL) {
        PyErr_Clear();
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* close(): no more reads or sends (the socket is being closed); the table is let go. */
static PyObject *
DatagramReader_close(DatagramReader *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;
    reader_drop_table(self);
    Py_RETURN_NONE;
}

static PyObject *
DatagramReader_sockaddr(PyObject *Py_UNUSED(cls), PyObject *addr)
{
    return reader_sockaddr(addr);
}

static PyObject *
DatagramReader_get_stats(DatagramReader *self, void *Py_UNUSED(closure))
{
    return Py_BuildValue("{sKsKsKsKsKsn}", "received", self->received,
                         "fast", self->fast_taken, "send_dropped", self->send_dropped,
                         "errors", self->errors, "truncated", self->truncated,
                         "armed", self->n_entries);
}

static PyObject *
DatagramReader_get_fd(DatagramReader *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyGetSetDef DatagramReader_getset[] = {
    {"stats", (getter)DatagramReader_get_stats, NULL, "counters since creation", NULL},
    {"fd", (getter)DatagramReader_get_fd, NULL, "the socket's fd (-1 once closed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef DatagramReader_methods[] = {
    {"set_fast", (PyCFunction)(void (*)(void))DatagramReader_set_fast, METH_FASTCALL,
     "set_fast(sockaddr, fast or None): that source's datagrams go to fast.receive first."},
    {"sendto", (PyCFunction)(void (*)(void))DatagramReader_sendto, METH_FASTCALL,
     "sendto(data, sockaddr): send one datagram (dropped, counted and BlockingIOError raised "
     "if it would block)."},
    {"close", (PyCFunction)DatagramReader_close, METH_NOARGS,
     "close(): stop reading and sending; the caller closes the socket."},
    {"sockaddr", (PyCFunction)DatagramReader_sockaddr, METH_O | METH_STATIC,
     "sockaddr(addr) -> the raw sockaddr bytes of a numeric (host, port[, flow, scope])."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DatagramReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "solgate.ipmi._speedups.DatagramReader",
    .tp_basicsize = sizeof(DatagramReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A shared UDP socket read in C (see solgate/ipmi/udp_pool.py).",
    .tp_new = DatagramReader_new,
    .tp_init = (initproc)DatagramReader_init,
    .tp_dealloc = (destructor)DatagramReader_dealloc,
    .tp_traverse = (traverseproc)DatagramReader_traverse,
    .tp_clear = (inquiry)DatagramReader_clear,
    .tp_call = (ternaryfunc)DatagramReader_call,
    .tp_methods = DatagramReader_methods,
    .tp_getset = DatagramReader_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Compiled per-packet RMCP+ path (optional; crypto.py is the reference).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m, *errors;
    errors = PyImport_ImportModule("solgate.errors");
    if (errors == NULL)
        return NULL;
    ProtocolError = PyObject_GetAttrString(errors, "ProtocolError");
    Py_DECREF(errors);
    if (ProtocolError == NULL)
        return NULL;
    if (PyType_Ready(&ProtectorType) < 0 || PyType_Ready(&SolFastPathType) < 0
        || PyType_Ready(&DatagramReaderType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ProtectorType);
    if (PyModule_AddObject(m, "Protector", (PyObject *)&ProtectorType) < 0) {
        Py_DECREF(&ProtectorType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SolFastPathType);
    if (PyModule_AddObject(m, "SolFastPath", (PyObject *)&SolFastPathType) < 0) {
        Py_DECREF(&SolFastPathType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DatagramReaderType);
    if (PyModule_AddObject(m, "DatagramReader", (PyObject *)&DatagramReaderType) < 0) {
        Py_DECREF(&DatagramReaderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

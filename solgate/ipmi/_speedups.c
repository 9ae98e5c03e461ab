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
 * K1 ^ opad (RFC 2104) and copies them per message, as crypto.py does. Nothing here holds
 * state between packets except those keyed contexts, so the session layer (replay window,
 * sequence numbers) stays in Python.
 *
 * If this file cannot be built (no compiler, no libssl-dev), setup.py skips it and
 * crypto.py runs alone; `solgate serve` says which path runs on its ready line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

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

/* unseal(datagram) -> (payload type, session sequence number, payload) */
static PyObject *
Protector_unseal(Protector *self, PyObject *arg)
{
    Py_buffer view;
    PyObject *result = NULL;
    const unsigned char *d;
    Py_ssize_t n, length, end;
    unsigned char ptype;
    unsigned long seq;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    d = view.buf;
    n = view.len;
    if (n < HEADER_LEN) {
        PyErr_Format(ProtocolError, "RMCP+ header: expected at least %d bytes, got %zd",
                     HEADER_LEN, n);
        goto done;
    }
    if (memcmp(d, RMCP_IPMI_HEADER, 4) != 0) {
        protocol_error("not an RMCP IPMI-class packet");
        goto done;
    }
    if (d[4] != AUTH_TYPE_RMCPPLUS) {
        PyErr_Format(ProtocolError, "auth type 0x%02x is not RMCP+", (unsigned)d[4]);
        goto done;
    }
    ptype = d[5];
    if ((ptype & PAYLOAD_TYPE_MASK) == PAYLOAD_OEM_EXPLICIT) {
        protocol_error("OEM explicit payloads are not supported");
        goto done;
    }
    seq = le32(d + 10);
    length = (Py_ssize_t)d[14] | (Py_ssize_t)d[15] << 8;
    if (HEADER_LEN + length > n) {
        protocol_error("RMCP+ payload length runs past the datagram");
        goto done;
    }
    end = HEADER_LEN + length;
    if (self->md != NULL) {
        Py_ssize_t trailer = n - end, pad = trailer - 2 - self->mac_len, mac_at;
        unsigned char mac[EVP_MAX_MD_SIZE];
        if (!(ptype & PAYLOAD_AUTHENTICATED)) {
            protocol_error("unauthenticated packet on an authenticated session");
            goto done;
        }
        if (pad < 0 || pad > 4) {
            PyErr_Format(ProtocolError, "session trailer of %zd bytes", trailer);
            goto done;
        }
        if (d[end + pad] != pad || d[end + pad + 1] != NEXT_HEADER) {
            protocol_error("session trailer pad length or next header is wrong");
            goto done;
        }
        mac_at = n - self->mac_len;
        if (!auth_code(self, d + 4, (size_t)(mac_at - 4), mac)) {
            openssl_error("HMAC");
            goto done;
        }
        if (CRYPTO_memcmp(mac, d + mac_at, (size_t)self->mac_len) != 0) {
            protocol_error("integrity check failed");
            goto done;
        }
    } else if ((ptype & PAYLOAD_AUTHENTICATED) || n != end) {
        protocol_error("unexpected session trailer");
        goto done;
    }
    if (self->aes) {
        const unsigned char *payload = d + HEADER_LEN;
        unsigned char *plain;
        int out = 0, npad, i;
        PyObject *buf;
        if (!(ptype & PAYLOAD_ENCRYPTED)) {
            protocol_error("unencrypted payload on an encrypted session");
            goto done;
        }
        if (length < 32 || length % 16) {
            PyErr_Format(ProtocolError, "encrypted payload of %zd bytes", length);
            goto done;
        }
        /* Decrypt straight into a bytes object, then shrink it to the payload. */
        buf = PyBytes_FromStringAndSize(NULL, length - 16);
        if (buf == NULL)
            goto done;
        plain = (unsigned char *)PyBytes_AS_STRING(buf);
        if (!EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, payload)
            || !EVP_DecryptUpdate(self->dec, plain, &out, payload + 16, (int)(length - 16))
            || out != length - 16) {
            Py_DECREF(buf);
            openssl_error("AES decrypt");
            goto done;
        }
        npad = plain[out - 1];
        if (npad > 16 || npad + 1 > out) {
            Py_DECREF(buf);
            PyErr_Format(ProtocolError, "confidentiality pad length %d", npad);
            goto done;
        }
        for (i = 0; i < npad; i++) {
            if (plain[out - 1 - npad + i] != i + 1) {
                Py_DECREF(buf);
                protocol_error("confidentiality pad bytes are wrong");
                goto done;
            }
        }
        if (_PyBytes_Resize(&buf, out - 1 - npad) < 0)
            goto done;
        result = Py_BuildValue("(ikN)", ptype & PAYLOAD_TYPE_MASK, seq, buf);
    } else if (ptype & PAYLOAD_ENCRYPTED) {
        protocol_error("encrypted payload on a session without confidentiality");
    } else {
        result = Py_BuildValue("(iky#)", ptype & PAYLOAD_TYPE_MASK, seq, d + HEADER_LEN,
                               length);
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

/* seal(payload_type, session_id, seq, payload, iv) -> datagram; iv is None without AES */
static PyObject *
Protector_seal(Protector *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long ptype_in, sid, seq;
    Py_buffer payload, iv = {NULL};
    PyObject *result = NULL;
    Py_ssize_t body_len, pad = 0, total;
    unsigned char *out, *body, ptype;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "seal() takes 5 arguments");
        return NULL;
    }
    ptype_in = PyLong_AsUnsignedLong(args[0]);
    sid = PyLong_AsUnsignedLong(args[1]);
    seq = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (ptype_in > 0xff || sid > 0xffffffffUL || seq > 0xffffffffUL) {
        PyErr_SetString(PyExc_OverflowError, "payload type, session ID or sequence out of range");
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    ptype = (unsigned char)ptype_in;
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
        body_len = 16 + (payload.len / 16 + 1) * 16;
        ptype |= PAYLOAD_ENCRYPTED;
    } else {
        body_len = payload.len;
    }
    if (body_len > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "payload too long for one RMCP+ packet");
        goto done;
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
        goto done;
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
        Py_ssize_t plain_len = body_len - 16, k = payload.len;
        int n = (int)((15 - payload.len % 16) % 16), done_len = 0, i;
        unsigned char *plain = body + 16;
        memcpy(body, iv.buf, 16);
        memcpy(plain, payload.buf, (size_t)payload.len);
        for (i = 1; i <= n; i++) plain[k++] = (unsigned char)i;
        plain[k] = (unsigned char)n;
        if (!EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, iv.buf)
            || !EVP_EncryptUpdate(self->enc, plain, &done_len, plain, (int)plain_len)
            || done_len != plain_len) {
            Py_CLEAR(result);
            openssl_error("AES encrypt");
            goto done;
        }
    } else {
        memcpy(body, payload.buf, (size_t)payload.len);
    }
    if (self->md != NULL) {
        unsigned char *trailer = body + body_len, mac[EVP_MAX_MD_SIZE];
        memset(trailer, 0xff, (size_t)pad);
        trailer[pad] = (unsigned char)pad;
        trailer[pad + 1] = NEXT_HEADER;
        if (!auth_code(self, out + 4, (size_t)(12 + body_len + pad + 2), mac)) {
            Py_CLEAR(result);
            openssl_error("HMAC");
            goto done;
        }
        memcpy(trailer + pad + 2, mac, (size_t)self->mac_len);
    }
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
    if (PyType_Ready(&ProtectorType) < 0)
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
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

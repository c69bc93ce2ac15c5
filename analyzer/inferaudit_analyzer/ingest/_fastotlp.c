/* OTLP/JSON export request (one line) -> the canonical span rows, without building a Python
 * object per attribute.
 *
 * Why C: the Python path spends ~27 us of CPU a span decoding ~40 small objects and walking
 * them; this walks the bytes once and builds only what a row keeps. It is a fast path, never the
 * definition: for any line whose shape it does not handle exactly as the Python path would
 * (base64 ids, enum names, odd number spellings, kvlist values, duplicate keys, invalid JSON,
 * ...) it returns None and the caller runs the Python path on that line, so both paths give the
 * same rows, errors included. Nothing is kept from a line it gives up on.
 *
 * convert(line) -> None | [(resource_attrs_json: bytes | None,
 *                           [(scope_name, [(row, attrs_json, has_genai, fallbacks, links)])])]
 * row: list of n_row with the span's own fields and the promoted attributes filled, the rest
 * None; attrs_json: the attributes not promoted, as orjson would write their dict; fallbacks:
 * [(key, value)] of the fallback spellings present, or None; links: [(trace_id, span_id)] or
 * None. configure() tells it the column indices and the attribute names, once per process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ configuration */

enum { K_STR = 0, K_INT = 1, K_FLOAT = 2, K_BOOL = 3, K_COUNT = 4 }; /* count: int >= 0 */
enum { C_PLAIN = 0, C_PROMOTED = 1, C_FALLBACK = 2 };

static PyObject *g_primary;   /* dict key -> (row index, kind) */
static PyObject *g_fallback;  /* dict/set of fallback keys */
static PyObject *g_prefixes;  /* tuple of str: keys marking a GenAI span */
static PyObject *g_loads;     /* json loads: the slow path of escaped strings */
static PyObject *g_dumps;     /* orjson.dumps: exact text of escaped strings and floats */
static Py_ssize_t g_n_row = -1;
static Py_ssize_t I_TRACE, I_SPAN, I_PARENT, I_NAME, I_KIND, I_START, I_END, I_DUR, I_STATUS;

#define MAX_DEPTH 256

typedef struct {
    int cls;
    Py_ssize_t idx;
    int kind;
    int genai;
    int shared_values; /* a column of few distinct values: one str object per value */
} KeyInfo;

static PyObject *g_shared_columns; /* frozenset of row indices with few distinct values */

/* Byte strings -> their str (and, for attribute names, their KeyInfo): a hot name or value
 * costs a hash instead of a new str and a dict lookup. Open addressing; once 3/4 full, new
 * strings are made each time instead. Two tables: attribute names, and the values of the
 * few-distinct-value columns (role, model, route, span name, ...). */
#define CACHE_SLOTS 4096
typedef struct {
    char *bytes;
    Py_ssize_t len;
    uint64_t hash;
    PyObject *str;
    KeyInfo info;
} CacheSlot;

typedef struct {
    CacheSlot slots[CACHE_SLOTS];
    Py_ssize_t used;
} StrTable;

static StrTable g_keys, g_vals;

/* Hash of short byte strings from their length and three 8-byte windows (first, middle, last):
 * attribute names share prefixes, so a byte-at-a-time hash would cost more than the lookup. */
static uint64_t key_hash(const char *s, Py_ssize_t n) {
    uint64_t a = 0, b = 0, m = 0;
    if (n >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(&m, s + n / 2 - 4, 8);
    } else {
        memcpy(&a, s, (size_t)n);
    }
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL;
    h ^= a * 0xC2B2AE3D27D4EB4FULL;
    h = (h << 31) | (h >> 33);
    h ^= b * 0x165667B19E3779F9ULL;
    h = (h << 29) | (h >> 35);
    h ^= m * 0x27D4EB2F165667C5ULL;
    h ^= h >> 32;
    return h;
}

static void table_clear(StrTable *t) {
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (t->slots[i].bytes) {
            PyMem_Free(t->slots[i].bytes);
            Py_DECREF(t->slots[i].str);
            t->slots[i].bytes = NULL;
        }
    }
    t->used = 0;
}

/* The slot holding these bytes, or the empty slot where they would go (*found says which). */
static inline CacheSlot *table_find(StrTable *t, const char *s, Py_ssize_t n, uint64_t h, int *found) {
    size_t i = (size_t)(h & (CACHE_SLOTS - 1));
    for (;;) {
        CacheSlot *c = &t->slots[i];
        if (!c->bytes || (c->hash == h && c->len == n && memcmp(c->bytes, s, (size_t)n) == 0)) {
            *found = c->bytes != NULL;
            return c;
        }
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
}

/* Keep str (and info) in the empty slot c while the table has room; nothing if not. */
static void table_add(StrTable *t, CacheSlot *c, const char *s, Py_ssize_t n, uint64_t h,
                      PyObject *str, const KeyInfo *info) {
    if (t->used >= CACHE_SLOTS * 3 / 4) return;
    char *copy = PyMem_Malloc((size_t)n + 1);
    if (!copy) return;
    memcpy(copy, s, (size_t)n);
    c->bytes = copy;
    c->len = n;
    c->hash = h;
    c->str = str;
    Py_INCREF(str);
    if (info) c->info = *info;
    t->used++;
}

/* Classify a key given as a str. Returns 0 on success, -1 with a Python error set. */
static int classify(PyObject *key, KeyInfo *info) {
    info->cls = C_PLAIN;
    info->idx = -1;
    info->kind = 0;
    info->genai = 0;
    info->shared_values = 0;
    PyObject *p = PyDict_GetItemWithError(g_primary, key);
    if (p) {
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 2) {
            PyErr_SetString(PyExc_TypeError, "primary values must be (index, kind)");
            return -1;
        }
        info->cls = C_PROMOTED;
        info->idx = PyLong_AsSsize_t(PyTuple_GET_ITEM(p, 0));
        info->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(p, 1));
        if (PyErr_Occurred()) return -1;
        if (info->idx < 0 || info->idx >= g_n_row) {
            PyErr_SetString(PyExc_ValueError, "primary index out of range");
            return -1;
        }
        int shared = PySequence_Contains(g_shared_columns, PyTuple_GET_ITEM(p, 0));
        if (shared < 0) return -1;
        info->shared_values = shared;
        return 0;
    }
    if (PyErr_Occurred()) return -1;
    int r = PySequence_Contains(g_fallback, key);
    if (r < 0) return -1;
    if (r) info->cls = C_FALLBACK;
    Py_ssize_t n = PyTuple_GET_SIZE(g_prefixes);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t m = PyUnicode_Tailmatch(key, PyTuple_GET_ITEM(g_prefixes, i), 0, PY_SSIZE_T_MAX, -1);
        if (m < 0) return -1;
        if (m) {
            info->genai = 1;
            break;
        }
    }
    return 0;
}

/* The key str (new reference) and its class for raw, unescaped key bytes. */
static PyObject *key_lookup(const char *s, Py_ssize_t n, KeyInfo *info) {
    uint64_t h = key_hash(s, n);
    int found;
    CacheSlot *c = table_find(&g_keys, s, n, h, &found);
    if (found) {
        *info = c->info;
        Py_INCREF(c->str);
        return c->str;
    }
    PyObject *key = PyUnicode_DecodeUTF8(s, n, NULL);
    if (!key) return NULL;
    if (classify(key, info) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    table_add(&g_keys, c, s, n, h, key, info);
    return key;
}

/* The str of unescaped UTF-8 bytes (new reference), shared while the table has room. */
static PyObject *shared_str(const char *s, Py_ssize_t n) {
    if (n > 64) return PyUnicode_DecodeUTF8(s, n, NULL);
    uint64_t h = key_hash(s, n);
    int found;
    CacheSlot *c = table_find(&g_vals, s, n, h, &found);
    if (found) {
        Py_INCREF(c->str);
        return c->str;
    }
    PyObject *str = PyUnicode_DecodeUTF8(s, n, NULL);
    if (str) table_add(&g_vals, c, s, n, h, str, NULL);
    return str;
}

/* ------------------------------------------------------------------ output buffer */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *d = PyMem_Realloc(b->data, (size_t)cap);
    if (!d) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int buf_putc(Buf *b, char ch) {
    if (buf_grow(b, 1) < 0) return -1;
    b->data[b->len++] = ch;
    return 0;
}

/* ------------------------------------------------------------------ the scanner */

/* Outcome of a parse step: OK, GIVE_UP (this line is the Python path's), or ERR (a Python
 * exception is set: memory, or a broken configuration). */
enum { OK = 0, GIVE_UP = 1, ERR = -1 };

typedef struct {
    const unsigned char *p, *end;
} Cur;

typedef struct {
    const char *s; /* contents between the quotes */
    Py_ssize_t n;
    int esc;       /* contains a backslash escape */
} Str;

static inline void ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline int peek(Cur *c) {
    ws(c);
    return c->p < c->end ? *c->p : -1;
}

static inline int eat(Cur *c, char ch) {
    if (peek(c) == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int read_u16(const unsigned char *p, const unsigned char *end, unsigned *out) {
    if (end - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* A JSON string: valid escapes (surrogates paired), no control characters, valid UTF-8. */
static int scan_string(Cur *c, Str *out) {
    if (peek(c) != '"') return GIVE_UP;
    const unsigned char *p = ++c->p, *end = c->end;
    const unsigned char *start = p;
    int esc = 0;
    while (p < end) {
        /* eight plain bytes at a time: no quote, backslash, control or non-ASCII byte */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
            uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
            uint64_t t = ((q - ones) & ~q) | ((bs - ones) & ~bs) | ((x - ones * 0x20) & ~x) | x;
            if (t & highs) break;
            p += 8;
        }
        if (p >= end) break;
        unsigned char ch = *p;
        if (ch == '"') {
            out->s = (const char *)start;
            out->n = p - start;
            out->esc = esc;
            c->p = p + 1;
            return OK;
        }
        if (ch < 0x20) return GIVE_UP;
        if (ch == '\\') {
            esc = 1;
            if (++p >= end) return GIVE_UP;
            ch = *p;
            if (ch == 'u') {
                unsigned u;
                if (read_u16(p + 1, end, &u) < 0) return GIVE_UP;
                p += 5;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    unsigned lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                        read_u16(p + 2, end, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                        return GIVE_UP;
                    p += 6;
                } else if (u >= 0xDC00 && u <= 0xDFFF) {
                    return GIVE_UP;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", ch) || ch == 0) return GIVE_UP;
            p++;
            continue;
        }
        if (ch < 0x80) {
            p++;
            continue;
        }
        /* UTF-8: no overlongs, no surrogates, at most U+10FFFF */
        Py_ssize_t left = end - p;
        if (ch >= 0xC2 && ch <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) return GIVE_UP;
            p += 2;
        } else if (ch >= 0xE0 && ch <= 0xEF) {
            if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return GIVE_UP;
            if (ch == 0xE0 && p[1] < 0xA0) return GIVE_UP;
            if (ch == 0xED && p[1] > 0x9F) return GIVE_UP;
            p += 3;
        } else if (ch >= 0xF0 && ch <= 0xF4) {
            if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
                (p[3] & 0xC0) != 0x80)
                return GIVE_UP;
            if (ch == 0xF0 && p[1] < 0x90) return GIVE_UP;
            if (ch == 0xF4 && p[1] > 0x8F) return GIVE_UP;
            p += 4;
        } else {
            return GIVE_UP;
        }
    }
    return GIVE_UP;
}

/* A JSON number's text; *is_int when it has no fraction and no exponent. */
static int scan_number(Cur *c, const char **s, Py_ssize_t *n, int *is_int) {
    ws(c);
    const unsigned char *p = c->p, *end = c->end, *start = p;
    *is_int = 1;
    if (p < end && *p == '-') p++;
    if (p >= end) return GIVE_UP;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return GIVE_UP;
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    *s = (const char *)start;
    *n = p - start;
    c->p = p;
    return OK;
}

static int scan_literal(Cur *c, const char *lit) {
    size_t n = strlen(lit);
    ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return GIVE_UP;
    c->p += n;
    return OK;
}

/* A number msgspec decodes without complaint: an integer of at most 18 digits, or a finite
 * double. Beyond that it says "number out of range" in the fields it decodes generically
 * (resource, scope, status), or makes a big int; either way the Python path decides. */
static int number_in_range(const char *s, Py_ssize_t n, int is_int) {
    if (is_int) return n <= 19 ? OK : GIVE_UP; /* 18 digits and a sign */
    char tmp[64];
    if (n >= (Py_ssize_t)sizeof tmp) return GIVE_UP;
    memcpy(tmp, s, (size_t)n);
    tmp[n] = 0;
    double d = PyOS_string_to_double(tmp, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return GIVE_UP;
    }
    return isfinite(d) ? OK : GIVE_UP;
}

/* Skip any JSON value, validating it. */
static int skip_value(Cur *c, int depth) {
    if (depth > MAX_DEPTH) return GIVE_UP;
    int ch = peek(c);
    Str s;
    const char *ns;
    Py_ssize_t nn;
    int is_int, r;
    switch (ch) {
    case '"':
        return scan_string(c, &s);
    case '{':
        c->p++;
        if (eat(c, '}')) return OK;
        for (;;) {
            if ((r = scan_string(c, &s)) != OK) return r;
            if (!eat(c, ':')) return GIVE_UP;
            if ((r = skip_value(c, depth + 1)) != OK) return r;
            if (eat(c, ',')) continue;
            if (eat(c, '}')) return OK;
            return GIVE_UP;
        }
    case '[':
        c->p++;
        if (eat(c, ']')) return OK;
        for (;;) {
            if ((r = skip_value(c, depth + 1)) != OK) return r;
            if (eat(c, ',')) continue;
            if (eat(c, ']')) return OK;
            return GIVE_UP;
        }
    case 't':
        return scan_literal(c, "true");
    case 'f':
        return scan_literal(c, "false");
    case 'n':
        return scan_literal(c, "null");
    default:
        if ((r = scan_number(c, &ns, &nn, &is_int)) != OK) return r;
        return number_in_range(ns, nn, is_int);
    }
}

static inline int is_null(Cur *c) {
    if (peek(c) == 'n' && scan_literal(c, "null") == OK) return 1;
    return 0;
}

/* Whether a field name is the literal ``name`` (a string literal: its length is known). Names
 * with escapes never get here (obj_key declines them). */
#define key_is(k, name) \
    ((k)->n == (Py_ssize_t)sizeof(name) - 1 && memcmp((k)->s, name, sizeof(name) - 1) == 0)

/* Object iteration, the one place that reads field names and separators.
 * obj_open expects '{'; obj_key then reads the next field name and its ':' (after a ',' past the
 * first), returning MORE with the name, END at '}', or GIVE_UP. A field name written with
 * escapes ("n\u0061me") is a name msgspec decodes and reads: the Python path takes the line. */
enum { MORE = 2, END = 3 };

typedef struct {
    int first;
} ObjIt;

static int obj_open(Cur *c, ObjIt *it) {
    if (peek(c) != '{') return GIVE_UP;
    c->p++;
    it->first = 1;
    return OK;
}

static int obj_key(Cur *c, ObjIt *it, Str *k) {
    if (eat(c, '}')) return END;
    if (!it->first && !eat(c, ',')) return GIVE_UP;
    it->first = 0;
    int r = scan_string(c, k);
    if (r != OK) return r;
    if (k->esc || !eat(c, ':')) return GIVE_UP;
    return MORE;
}

/* Run the statements after it for each field of an object, the name in k; a failure returns
 * from the enclosing function (for functions that own nothing to release). */
#define FOR_FIELDS(c, k, ...)                                                                 \
    do {                                                                                      \
        ObjIt _it;                                                                            \
        int _r = obj_open(c, &_it);                                                           \
        if (_r != OK) return _r;                                                              \
        while ((_r = obj_key(c, &_it, &(k))) == MORE) {                                       \
            __VA_ARGS__                                                                       \
        }                                                                                     \
        if (_r != END) return _r;                                                             \
    } while (0)

/* The same loop for functions that release what they built: the statements leave the loop with
 * ``break`` after setting r to GIVE_UP or ERR; afterwards r is OK, GIVE_UP or ERR. */
#define EACH_FIELD(c, k, r, ...)                                                              \
    do {                                                                                      \
        ObjIt _it;                                                                            \
        if (((r) = obj_open(c, &_it)) != OK) break;                                           \
        while (((r) = obj_key(c, &_it, &(k))) == MORE) {                                      \
            __VA_ARGS__                                                                       \
        }                                                                                     \
        if ((r) == END) (r) = OK;                                                             \
    } while (0)

/* A canonical decimal integer within int64: "0" or -?[1-9][0-9]*, nothing else. */
static int parse_i64(const char *s, Py_ssize_t n, long long *out) {
    Py_ssize_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n) return GIVE_UP;
    if (s[i] == '0') {
        if (n != i + 1 || neg) return GIVE_UP;
        *out = 0;
        return OK;
    }
    unsigned long long v = 0;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < '0' || ch > '9') return GIVE_UP;
        unsigned d = ch - '0';
        if (v > (9223372036854775808ULL - d) / 10) return GIVE_UP;
        v = v * 10 + d;
    }
    if (!neg && v > 9223372036854775807ULL) return GIVE_UP;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return OK;
}

/* An integer written as a JSON string or a JSON integer. */
static int scan_int(Cur *c, long long *out) {
    int ch = peek(c);
    if (ch == '"') {
        Str s;
        int r = scan_string(c, &s);
        if (r != OK) return r;
        if (s.esc) return GIVE_UP;
        return parse_i64(s.s, s.n, out);
    }
    const char *ns;
    Py_ssize_t nn;
    int is_int;
    int r = scan_number(c, &ns, &nn, &is_int);
    if (r != OK) return r;
    if (!is_int) return GIVE_UP;
    return parse_i64(ns, nn, out);
}

/* In an EACH_FIELD body: a field that may appear once. A repeat declines the line (msgspec
 * keeps the last, the Python dict too). */
#define ONCE(seen)     \
    if ((seen)++) {    \
        r = GIVE_UP;   \
        break;         \
    }

/* Python str of a scanned string; escapes go through the JSON library. */
static PyObject *str_of(const Str *s) {
    if (!s->esc) return PyUnicode_DecodeUTF8(s->s, s->n, NULL);
    PyObject *raw = PyBytes_FromStringAndSize(NULL, s->n + 2);
    if (!raw) return NULL;
    char *d = PyBytes_AS_STRING(raw);
    d[0] = '"';
    memcpy(d + 1, s->s, (size_t)s->n);
    d[s->n + 1] = '"';
    PyObject *v = PyObject_CallOneArg(g_loads, raw);
    Py_DECREF(raw);
    return v;
}

/* A str as orjson writes it: raw when unescaped, else orjson's own text. */
static int put_json_str(Buf *b, const Str *s) {
    if (!s->esc) {
        if (buf_grow(b, s->n + 2) < 0) return ERR;
        b->data[b->len++] = '"';
        memcpy(b->data + b->len, s->s, (size_t)s->n);
        b->len += s->n;
        b->data[b->len++] = '"';
        return OK;
    }
    PyObject *v = str_of(s);
    if (!v) return ERR;
    PyObject *j = PyObject_CallOneArg(g_dumps, v);
    Py_DECREF(v);
    if (!j) return ERR;
    int r = buf_put(b, PyBytes_AS_STRING(j), PyBytes_GET_SIZE(j)) < 0 ? ERR : OK;
    Py_DECREF(j);
    return r;
}

static int put_json_obj(Buf *b, PyObject *v) {
    PyObject *j = PyObject_CallOneArg(g_dumps, v);
    if (!j) return ERR;
    int r = buf_put(b, PyBytes_AS_STRING(j), PyBytes_GET_SIZE(j)) < 0 ? ERR : OK;
    Py_DECREF(j);
    return r;
}

/* ------------------------------------------------------------------ AnyValue */

enum { V_NONE = 0, V_STR, V_INT, V_DBL, V_BOOL, V_ARR, V_BYTES };

typedef struct {
    int type;
    Str s;
    long long i;
    double d;
    int b;
    Py_ssize_t arr_start, arr_len; /* the array's JSON, in the scratch buffer */
} Val;

static int scan_any_value(Cur *c, Val *v, Buf *scratch, int depth);

enum { F_STRING, F_INT, F_DOUBLE, F_BOOL, F_ARRAY, F_BYTES, F_KVLIST };

/* Which AnyValue field a name is, or -1 (first letters first: this runs for every value). */
static int any_field(const Str *k) {
    switch (k->n ? k->s[0] : 0) {
    case 's':
        return key_is(k, "stringValue") ? F_STRING : -1;
    case 'i':
        return key_is(k, "intValue") ? F_INT : -1;
    case 'd':
        return key_is(k, "doubleValue") ? F_DOUBLE : -1;
    case 'b':
        return key_is(k, "boolValue") ? F_BOOL : key_is(k, "bytesValue") ? F_BYTES : -1;
    case 'a':
        return key_is(k, "arrayValue") ? F_ARRAY : -1;
    case 'k':
        return key_is(k, "kvlistValue") ? F_KVLIST : -1;
    default:
        return -1;
    }
}

/* A doubleValue: a JSON number as msgspec reads it into a float field (an integer literal is
 * an int first, so -0 is 0.0; huge integers and non-finite values are Python's to judge). */
static int scan_double(Cur *c, double *out) {
    const char *ns;
    Py_ssize_t nn;
    int is_int, r;
    if (peek(c) == '"') return GIVE_UP;
    if ((r = scan_number(c, &ns, &nn, &is_int)) != OK) return r;
    if (is_int) {
        long long iv;
        if ((r = parse_i64(ns, nn, &iv)) != OK) return r;
        *out = (double)iv;
        return OK;
    }
    char tmp[64];
    if (nn >= (Py_ssize_t)sizeof tmp) return GIVE_UP;
    memcpy(tmp, ns, (size_t)nn);
    tmp[nn] = 0;
    double d = PyOS_string_to_double(tmp, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return GIVE_UP;
    }
    if (!isfinite(d)) return GIVE_UP;
    *out = d;
    return OK;
}

/* {"values": [AnyValue, ...]} -> JSON array text appended to scratch. */
static int scan_array_value(Cur *c, Buf *scratch, int depth) {
    if (depth > 32) return GIVE_UP;
    if (is_null(c)) return buf_put(scratch, "[]", 2) < 0 ? ERR : OK;
    Str k;
    int seen = 0, r;
    Py_ssize_t mark = scratch->len;
    FOR_FIELDS(c, k, {
        if (key_is(&k, "values")) {
            if (seen++) return GIVE_UP;
            scratch->len = mark;
            if (buf_putc(scratch, '[') < 0) return ERR;
            if (!is_null(c)) {
                if (!eat(c, '[')) return GIVE_UP;
                if (!eat(c, ']')) {
                    int first = 1;
                    for (;;) {
                        if (!first && buf_putc(scratch, ',') < 0) return ERR;
                        first = 0;
                        Val e;
                        if ((r = scan_any_value(c, &e, scratch, depth + 1)) != OK) return r;
                        switch (e.type) {
                        case V_NONE:
                            if (buf_put(scratch, "null", 4) < 0) return ERR;
                            break;
                        case V_STR:
                        case V_BYTES:
                            if ((r = put_json_str(scratch, &e.s)) != OK) return r;
                            break;
                        case V_INT: {
                            char tmp[32];
                            int n = snprintf(tmp, sizeof tmp, "%lld", e.i);
                            if (buf_put(scratch, tmp, n) < 0) return ERR;
                            break;
                        }
                        case V_DBL: {
                            PyObject *f = PyFloat_FromDouble(e.d);
                            if (!f) return ERR;
                            r = put_json_obj(scratch, f);
                            Py_DECREF(f);
                            if (r != OK) return r;
                            break;
                        }
                        case V_BOOL:
                            if (buf_put(scratch, e.b ? "true" : "false", e.b ? 4 : 5) < 0)
                                return ERR;
                            break;
                        case V_ARR:
                            break; /* written in place by the nested call */
                        }
                        if (eat(c, ',')) continue;
                        if (eat(c, ']')) break;
                        return GIVE_UP;
                    }
                }
            }
            if (buf_putc(scratch, ']') < 0) return ERR;
        } else if ((r = skip_value(c, depth + 1)) != OK) {
            return r;
        }
    });
    if (!seen) return buf_put(scratch, "[]", 2) < 0 ? ERR : OK;
    return OK;
}

/* One AnyValue with at most one field set (null fields count as unset). Arrays are written as
 * JSON into scratch at once; an element array lands inside its parent's text. */
static int scan_any_value(Cur *c, Val *v, Buf *scratch, int depth) {
    v->type = V_NONE;
    if (peek(c) != '{') return GIVE_UP; /* null is not an AnyValue to the typed decoder */
    Str k;
    int r, set = 0, seen = 0;
    FOR_FIELDS(c, k, {
        int f = any_field(&k);
        if (f >= 0) {
            if (seen & (1 << f)) return GIVE_UP; /* repeated: msgspec keeps the last, even null */
            seen |= 1 << f;
        }
        if (is_null(c)) {
            /* a null field is unset, as in the typed decoder */
        } else if (f == F_STRING) {
            if (set++) return GIVE_UP;
            if ((r = scan_string(c, &v->s)) != OK) return r;
            v->type = V_STR;
        } else if (f == F_INT) {
            if (set++) return GIVE_UP;
            if ((r = scan_int(c, &v->i)) != OK) return r;
            v->type = V_INT;
        } else if (f == F_DOUBLE) {
            if (set++) return GIVE_UP;
            if ((r = scan_double(c, &v->d)) != OK) return r;
            v->type = V_DBL;
        } else if (f == F_BOOL) {
            if (set++) return GIVE_UP;
            if (peek(c) == 't') {
                if ((r = scan_literal(c, "true")) != OK) return r;
                v->b = 1;
            } else {
                if ((r = scan_literal(c, "false")) != OK) return r;
                v->b = 0;
            }
            v->type = V_BOOL;
        } else if (f == F_ARRAY) {
            if (set++) return GIVE_UP;
            v->arr_start = scratch->len;
            if ((r = scan_array_value(c, scratch, depth)) != OK) return r;
            v->arr_len = scratch->len - v->arr_start;
            v->type = V_ARR;
        } else if (f == F_BYTES) {
            if (set++) return GIVE_UP;
            if ((r = scan_string(c, &v->s)) != OK) return r;
            v->type = V_BYTES;
        } else if (f == F_KVLIST) {
            return GIVE_UP;
        } else if ((r = skip_value(c, depth + 1)) != OK) {
            return r;
        }
    });
    return OK;
}

/* ------------------------------------------------------------------ spans */

typedef struct {
    Buf attrs;     /* leftover attributes as a JSON object */
    Buf scratch;   /* array values */
    /* leftover keys of this span (offsets into attrs), and a hash set over them to refuse a
     * repeated one in constant time; its slots carry the span's generation, so a new span
     * starts with an empty set without clearing it */
    Py_ssize_t *keys_at;
    Py_ssize_t *keys_len;
    Py_ssize_t n_keys, cap_keys;
    struct KeySlot {
        uint32_t gen, idx;
    } *slots;
    size_t n_slots; /* a power of two, or 0 */
    uint32_t gen;
} SpanBufs;

static void new_span_keys(SpanBufs *sb) {
    sb->n_keys = 0;
    if (++sb->gen == 0) { /* wrapped: old stamps could match again */
        if (sb->slots) memset(sb->slots, 0, sizeof *sb->slots * sb->n_slots);
        sb->gen = 1;
    }
}

/* Slot of the key at (at, len) in the set: the one holding an equal key, else an empty one. */
static struct KeySlot *key_slot(SpanBufs *sb, Py_ssize_t at, Py_ssize_t len) {
    size_t mask = sb->n_slots - 1, i = (size_t)key_hash(sb->attrs.data + at, len) & mask;
    for (;;) {
        struct KeySlot *k = &sb->slots[i];
        if (k->gen != sb->gen) return k;
        Py_ssize_t j = (Py_ssize_t)k->idx;
        if (sb->keys_len[j] == len &&
            memcmp(sb->attrs.data + sb->keys_at[j], sb->attrs.data + at, (size_t)len) == 0)
            return k;
        i = (i + 1) & mask;
    }
}

static int note_key(SpanBufs *sb, Py_ssize_t at, Py_ssize_t len) {
    if (sb->n_keys == sb->cap_keys) {
        Py_ssize_t cap = sb->cap_keys ? sb->cap_keys * 2 : 32;
        Py_ssize_t *a = PyMem_Realloc(sb->keys_at, sizeof(Py_ssize_t) * (size_t)cap);
        if (!a) return (PyErr_NoMemory(), ERR);
        sb->keys_at = a;
        Py_ssize_t *l = PyMem_Realloc(sb->keys_len, sizeof(Py_ssize_t) * (size_t)cap);
        if (!l) return (PyErr_NoMemory(), ERR);
        sb->keys_len = l;
        sb->cap_keys = cap;
    }
    if ((size_t)(sb->n_keys + 1) * 2 > sb->n_slots) { /* grow, and re-add this span's keys */
        size_t n = sb->n_slots ? sb->n_slots * 2 : 64;
        struct KeySlot *slots = PyMem_Calloc(n, sizeof *slots);
        if (!slots) return (PyErr_NoMemory(), ERR);
        PyMem_Free(sb->slots);
        sb->slots = slots;
        sb->n_slots = n;
        if (sb->gen == 0) sb->gen = 1;
        for (Py_ssize_t j = 0; j < sb->n_keys; j++) {
            struct KeySlot *k = key_slot(sb, sb->keys_at[j], sb->keys_len[j]);
            k->gen = sb->gen;
            k->idx = (uint32_t)j;
        }
    }
    struct KeySlot *k = key_slot(sb, at, len);
    if (k->gen == sb->gen) return GIVE_UP; /* a repeated key: the Python dict keeps one */
    sb->keys_at[sb->n_keys] = at;
    sb->keys_len[sb->n_keys] = len;
    k->gen = sb->gen;
    k->idx = (uint32_t)sb->n_keys;
    sb->n_keys++;
    return OK;
}

/* Python value of a scalar Val (arrays: None here, the caller gives up). */
static PyObject *py_of(const Val *v) {
    switch (v->type) {
    case V_STR:
    case V_BYTES:
        return str_of(&v->s);
    case V_INT:
        return PyLong_FromLongLong(v->i);
    case V_DBL:
        return PyFloat_FromDouble(v->d);
    case V_BOOL:
        return PyBool_FromLong(v->b);
    default:
        Py_RETURN_NONE;
    }
}

static int put_val_json(SpanBufs *sb, const Val *v) {
    Buf *b = &sb->attrs;
    switch (v->type) {
    case V_NONE:
        return buf_put(b, "null", 4) < 0 ? ERR : OK;
    case V_STR:
    case V_BYTES:
        return put_json_str(b, &v->s);
    case V_INT: {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "%lld", v->i);
        return buf_put(b, tmp, n) < 0 ? ERR : OK;
    }
    case V_DBL: {
        PyObject *f = PyFloat_FromDouble(v->d);
        if (!f) return ERR;
        int r = put_json_obj(b, f);
        Py_DECREF(f);
        return r;
    }
    case V_BOOL:
        return buf_put(b, v->b ? "true" : "false", v->b ? 4 : 5) < 0 ? ERR : OK;
    case V_ARR:
        return buf_put(b, sb->scratch.data + v->arr_start, v->arr_len) < 0 ? ERR : OK;
    }
    return GIVE_UP;
}

/* One KeyValue: promoted into the row, or written to the leftover JSON (and, for a fallback
 * spelling, also handed back as (key, value)). */
static int scan_key_value(Cur *c, SpanBufs *sb, PyObject *row, PyObject **fallbacks,
                          int *has_genai) {
    Str k, key;
    int r, have_key = 0, have_val = 0;
    FOR_FIELDS(c, k, {
        if (key_is(&k, "key")) {
            if (have_key++) return GIVE_UP;
            if ((r = scan_string(c, &key)) != OK) return r;
        } else if (key_is(&k, "value")) {
            if (!have_key || have_val++) return GIVE_UP; /* value before key: Python's */
            KeyInfo info;
            PyObject *kstr;
            if (key.esc) {
                kstr = str_of(&key);
                if (!kstr) return ERR;
                if (classify(kstr, &info) < 0) {
                    Py_DECREF(kstr);
                    return ERR;
                }
            } else {
                kstr = key_lookup(key.s, key.n, &info);
                if (!kstr) return ERR;
            }
            sb->scratch.len = 0;
            Val v;
            r = scan_any_value(c, &v, &sb->scratch, 1);
            if (r != OK) {
                Py_DECREF(kstr);
                return r;
            }
            if (info.cls == C_PROMOTED) {
                static const int want[] = {V_STR, V_INT, V_DBL, V_BOOL, V_INT};
                Py_DECREF(kstr);
                if (info.kind < 0 || info.kind > 4 || v.type != want[info.kind]
                    || (info.kind == K_COUNT && v.i < 0))
                    return GIVE_UP; /* a conversion or its error: the Python path says */
                PyObject *x = (info.shared_values && v.type == V_STR && !v.s.esc)
                                  ? shared_str(v.s.s, v.s.n) : py_of(&v);
                if (!x) return ERR;
                PyList_SetItem(row, info.idx, x);
            } else {
                if (info.genai) *has_genai = 1;
                if (info.cls == C_FALLBACK && info.genai) { /* Python reads only these */
                    if (v.type == V_ARR || v.type == V_NONE) {
                        Py_DECREF(kstr);
                        return GIVE_UP;
                    }
                    PyObject *x = py_of(&v);
                    if (!x) {
                        Py_DECREF(kstr);
                        return ERR;
                    }
                    if (!*fallbacks && !(*fallbacks = PyList_New(0))) {
                        Py_DECREF(x);
                        Py_DECREF(kstr);
                        return ERR;
                    }
                    PyObject *t = PyTuple_Pack(2, kstr, x);
                    Py_DECREF(x);
                    if (!t || PyList_Append(*fallbacks, t) < 0) {
                        Py_XDECREF(t);
                        Py_DECREF(kstr);
                        return ERR;
                    }
                    Py_DECREF(t);
                }
                Py_DECREF(kstr);
                Buf *b = &sb->attrs;
                if (buf_putc(b, b->len > 0 ? ',' : '{') < 0) return ERR;
                Py_ssize_t at = b->len;
                if ((r = put_json_str(b, &key)) != OK) return r;
                if ((r = note_key(sb, at, b->len - at)) != OK) return r;
                if (buf_putc(b, ':') < 0) return ERR;
                if ((r = put_val_json(sb, &v)) != OK) return r;
            }
        } else if ((r = skip_value(c, 3)) != OK) {
            return r;
        }
    });
    if (!have_key) return GIVE_UP; /* the typed decoder requires a key */
    if (!have_val) {
        /* value absent: EMPTY_VALUE, None; for a promoted key the converters decide */
        KeyInfo info;
        PyObject *kstr = key.esc ? str_of(&key) : key_lookup(key.s, key.n, &info);
        if (!kstr) return ERR;
        if (key.esc && classify(kstr, &info) < 0) {
            Py_DECREF(kstr);
            return ERR;
        }
        Py_DECREF(kstr);
        if (info.cls != C_PLAIN) return GIVE_UP;
        if (info.genai) *has_genai = 1;
        Buf *b = &sb->attrs;
        if (buf_putc(b, b->len > 0 ? ',' : '{') < 0) return ERR;
        Py_ssize_t at = b->len;
        if ((r = put_json_str(b, &key)) != OK) return r;
        if ((r = note_key(sb, at, b->len - at)) != OK) return r;
        if (buf_put(b, ":null", 5) < 0) return ERR;
    }
    return OK;
}

static int scan_attributes(Cur *c, SpanBufs *sb, PyObject *row, PyObject **fallbacks,
                           int *has_genai) {
    if (is_null(c)) return OK;
    if (!eat(c, '[')) return GIVE_UP;
    if (eat(c, ']')) return OK;
    for (;;) {
        int r = scan_key_value(c, sb, row, fallbacks, has_genai);
        if (r != OK) return r;
        if (eat(c, ',')) continue;
        if (eat(c, ']')) return OK;
        return GIVE_UP;
    }
}

/* Lowercase hex digits only: the form ids are kept in (upper case, base64: Python's). */
static int is_lower_hex(const Str *s) {
    for (Py_ssize_t i = 0; i < s->n; i++) {
        unsigned char ch = (unsigned char)s->s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
    }
    return 1;
}

/* An id kept as written: exactly n lowercase hex digits, no escapes (else Python's, which
   lowercases hex, decodes base64 and names anything else). */
static int scan_id(Cur *c, Py_ssize_t n, PyObject **out) {
    Str s;
    int r = scan_string(c, &s);
    if (r != OK) return r;
    if (s.esc || s.n != n || !is_lower_hex(&s)) return GIVE_UP;
    *out = PyUnicode_DecodeUTF8(s.s, s.n, NULL);
    return *out ? OK : ERR;
}

static int scan_links(Cur *c, PyObject **links) {
    if (is_null(c)) return OK;
    if (!eat(c, '[')) return GIVE_UP;
    if (eat(c, ']')) return OK;
    if (!(*links = PyList_New(0))) return ERR;
    for (;;) {
        PyObject *tid = NULL, *sid = NULL;
        Str k;
        int r;
        EACH_FIELD(c, k, r, {
            if (key_is(&k, "traceId")) {
                if (tid) {
                    r = GIVE_UP;
                    break;
                }
                if ((r = scan_id(c, 32, &tid)) != OK) break;
            } else if (key_is(&k, "spanId")) {
                if (sid) {
                    r = GIVE_UP;
                    break;
                }
                if ((r = scan_id(c, 16, &sid)) != OK) break;
            } else if ((r = skip_value(c, 4)) != OK) {
                break;
            }
        });
        if (r == OK && (!tid || !sid)) r = GIVE_UP;
        if (r == OK) {
            PyObject *t = PyTuple_Pack(2, tid, sid);
            if (!t || PyList_Append(*links, t) < 0) r = ERR;
            Py_XDECREF(t);
        }
        Py_XDECREF(tid);
        Py_XDECREF(sid);
        if (r != OK) return r;
        if (eat(c, ',')) continue;
        if (eat(c, ']')) return OK;
        return GIVE_UP;
    }
}

enum {
    F_TRACE = 1, F_SPAN = 2, F_PARENT = 4, F_NAME = 8, F_KIND = 16, F_START = 32, F_END = 64,
    F_ATTRS = 128, F_LINKS = 256, F_STATUS = 512
};

static int scan_status(Cur *c, long long *code) {
    *code = 0;
    if (is_null(c)) return OK;
    Str k;
    int r, seen = 0;
    FOR_FIELDS(c, k, {
        if (key_is(&k, "code")) {
            if (seen++) return GIVE_UP;
            if (peek(c) == '"') return GIVE_UP; /* an enum name: Python's */
            if ((r = scan_int(c, code)) != OK) return r;
            if (*code < 0 || *code > 2) return GIVE_UP;
        } else if ((r = skip_value(c, 4)) != OK) {
            return r;
        }
    });
    return OK;
}

static int set_item(PyObject *row, Py_ssize_t i, PyObject *v) {
    if (!v) return ERR;
    PyList_SetItem(row, i, v);
    return OK;
}

/* One span -> (row, attrs_json, has_genai, fallbacks, links) appended to out. */
static int scan_span(Cur *c, SpanBufs *sb, PyObject *out) {
    PyObject *row = PyList_New(g_n_row);
    if (!row) return ERR;
    for (Py_ssize_t i = 0; i < g_n_row; i++) {
        Py_INCREF(Py_None);
        PyList_SET_ITEM(row, i, Py_None);
    }
    PyObject *fallbacks = NULL, *links = NULL;
    int has_genai = 0, seen = 0, r = OK;
    long long start = 0, end = 0, kind = 0, code = 0;
    sb->attrs.len = 0;
    new_span_keys(sb);
    Str k;

#define FIELD(flag)            \
    if (seen & (flag)) {       \
        r = GIVE_UP;           \
        break;                 \
    }                          \
    seen |= (flag);

    EACH_FIELD(c, k, r, {
        if (key_is(&k, "traceId")) {
            FIELD(F_TRACE)
            PyObject *v = NULL;
            if ((r = scan_id(c, 32, &v)) != OK) break;
            PyList_SetItem(row, I_TRACE, v);
        } else if (key_is(&k, "spanId")) {
            FIELD(F_SPAN)
            PyObject *v = NULL;
            if ((r = scan_id(c, 16, &v)) != OK) break;
            PyList_SetItem(row, I_SPAN, v);
        } else if (key_is(&k, "parentSpanId")) {
            FIELD(F_PARENT)
            if (is_null(c)) {
            } else {
                Str s;
                if ((r = scan_string(c, &s)) != OK) break;
                if (s.n == 0 && !s.esc) {
                } else if (s.esc || s.n != 16 || !is_lower_hex(&s)) {
                    r = GIVE_UP;
                    break;
                } else if ((r = set_item(row, I_PARENT,
                                         PyUnicode_DecodeUTF8(s.s, s.n, NULL))) != OK) {
                    break;
                }
            }
        } else if (key_is(&k, "name")) {
            FIELD(F_NAME)
            if (!is_null(c)) {
                Str s;
                if ((r = scan_string(c, &s)) != OK) break;
                if ((r = set_item(row, I_NAME, s.esc ? str_of(&s) : shared_str(s.s, s.n)))
                    != OK)
                    break;
            }
        } else if (key_is(&k, "kind")) {
            FIELD(F_KIND)
            if (peek(c) == '"') {
                r = GIVE_UP;
                break;
            }
            if ((r = scan_int(c, &kind)) != OK) break;
            if (kind < 0 || kind > 5) {
                r = GIVE_UP;
                break;
            }
        } else if (key_is(&k, "startTimeUnixNano")) {
            FIELD(F_START)
            if ((r = scan_int(c, &start)) != OK) break;
        } else if (key_is(&k, "endTimeUnixNano")) {
            FIELD(F_END)
            if ((r = scan_int(c, &end)) != OK) break;
        } else if (key_is(&k, "attributes")) {
            FIELD(F_ATTRS)
            if ((r = scan_attributes(c, sb, row, &fallbacks, &has_genai)) != OK) break;
        } else if (key_is(&k, "links")) {
            FIELD(F_LINKS)
            if ((r = scan_links(c, &links)) != OK) break;
        } else if (key_is(&k, "status")) {
            FIELD(F_STATUS)
            if ((r = scan_status(c, &code)) != OK) break;
        } else if ((r = skip_value(c, 3)) != OK) {
            break;
        }
    });
#undef FIELD
    if (r != OK) goto done;
    if (!(seen & F_TRACE) || !(seen & F_SPAN) || !(seen & F_START) || !(seen & F_END) ||
        !(start > 0 && start <= end)) {
        r = GIVE_UP; /* the Python path records the error */
        goto done;
    }
    if (PyList_GET_ITEM(row, I_NAME) == Py_None) {
        if ((r = set_item(row, I_NAME, PyUnicode_FromStringAndSize("", 0))) != OK) goto done;
    }
    if ((r = set_item(row, I_KIND, PyLong_FromLongLong(kind))) != OK ||
        (r = set_item(row, I_START, PyLong_FromLongLong(start))) != OK ||
        (r = set_item(row, I_END, PyLong_FromLongLong(end))) != OK ||
        (r = set_item(row, I_DUR, PyLong_FromLongLong(end - start))) != OK ||
        (r = set_item(row, I_STATUS, PyLong_FromLongLong(code))) != OK)
        goto done;
    {
        PyObject *attrs;
        if (sb->attrs.len == 0) {
            attrs = PyBytes_FromStringAndSize("{}", 2);
        } else {
            if (buf_putc(&sb->attrs, '}') < 0) {
                r = ERR;
                goto done;
            }
            attrs = PyBytes_FromStringAndSize(sb->attrs.data, sb->attrs.len);
        }
        if (!attrs) {
            r = ERR;
            goto done;
        }
        if (links && PyList_GET_SIZE(links) == 0) Py_CLEAR(links);
        PyObject *t = PyTuple_Pack(5, row, attrs, has_genai ? Py_True : Py_False,
                                   fallbacks ? fallbacks : Py_None, links ? links : Py_None);
        Py_DECREF(attrs);
        if (!t || PyList_Append(out, t) < 0) r = ERR;
        Py_XDECREF(t);
    }
done:
    Py_DECREF(row);
    Py_XDECREF(fallbacks);
    Py_XDECREF(links);
    return r;
}

/* A JSON array of items read by one function each: [] and null read as nothing. */
typedef int (*ItemFn)(Cur *c, SpanBufs *sb, PyObject *out);

static int scan_array_of(Cur *c, SpanBufs *sb, PyObject *out, ItemFn item) {
    if (is_null(c)) return OK;
    if (!eat(c, '[')) return GIVE_UP;
    if (eat(c, ']')) return OK;
    for (;;) {
        int r = item(c, sb, out);
        if (r != OK) return r;
        if (eat(c, ',')) continue;
        if (eat(c, ']')) return OK;
        return GIVE_UP;
    }
}

/* {"name": ...} of a scope (an Any-typed dict to the Python path): its name or None. */
static int scan_scope(Cur *c, PyObject **name) {
    if (is_null(c)) return OK;
    Str k;
    int r, seen = 0;
    EACH_FIELD(c, k, r, {
        if (key_is(&k, "name")) {
            ONCE(seen)
            if (!is_null(c)) {
                Str s;
                if ((r = scan_string(c, &s)) != OK) break;
                if (!(*name = str_of(&s))) {
                    r = ERR;
                    break;
                }
            }
        } else if ((r = skip_value(c, 4)) != OK) {
            break;
        }
    });
    return r;
}

/* {"attributes": [...]} of a resource (Any-typed): the attributes' JSON text, or none. */
static int scan_resource(Cur *c, PyObject **attrs) {
    if (is_null(c)) return OK;
    Str k;
    int r, seen = 0;
    EACH_FIELD(c, k, r, {
        if (key_is(&k, "attributes")) {
            ONCE(seen)
            ws(c);
            const unsigned char *a = c->p;
            if ((r = skip_value(c, 3)) != OK) break;
            if (!(*attrs = PyBytes_FromStringAndSize((const char *)a, c->p - a))) {
                r = ERR;
                break;
            }
        } else if ((r = skip_value(c, 3)) != OK) {
            break;
        }
    });
    return r;
}

/* One level of the OTLP nesting: an object with a head (a scope, a resource: read by head_fn
 * into a str, bytes or None), a list of items (spans, scopeSpans: each read by item_fn), and a
 * pre-1.0 field name that declines the line when set. -> (head, [items]) appended to out. */
typedef int (*HeadFn)(Cur *c, PyObject **head);

typedef struct {
    const char *head, *items, *old_name;
    HeadFn head_fn;
    ItemFn item_fn;
    int depth; /* nesting of the level's own fields, for skip_value's limit */
} Level;

static int name_is(const Str *k, const char *name) {
    size_t n = strlen(name);
    return (size_t)k->n == n && memcmp(k->s, name, n) == 0;
}

static int scan_level(Cur *c, SpanBufs *sb, PyObject *out, const Level *lv) {
    PyObject *items = PyList_New(0), *head = NULL;
    if (!items) return ERR;
    Str k;
    int r, seen_head = 0, seen_items = 0;
    EACH_FIELD(c, k, r, {
        if (name_is(&k, lv->head)) {
            ONCE(seen_head)
            if ((r = lv->head_fn(c, &head)) != OK) break;
        } else if (name_is(&k, lv->items)) {
            ONCE(seen_items)
            if ((r = scan_array_of(c, sb, items, lv->item_fn)) != OK) break;
        } else if (name_is(&k, lv->old_name)) {
            if (!is_null(c)) {
                r = GIVE_UP; /* the pre-1.0 name: the Python path reads it */
                break;
            }
        } else if ((r = skip_value(c, lv->depth)) != OK) {
            break;
        }
    });
    if (r == OK) {
        PyObject *t = PyTuple_Pack(2, head ? head : Py_None, items);
        if (!t || PyList_Append(out, t) < 0) r = ERR;
        Py_XDECREF(t);
    }
    Py_DECREF(items);
    Py_XDECREF(head);
    return r;
}

/* {"scope": {...}, "spans": [...]} -> (scope_name, spans) */
static const Level SCOPE_SPANS = {"scope", "spans", "instrumentationLibrary", scan_scope,
                                  scan_span, 3};

static int scan_scope_spans(Cur *c, SpanBufs *sb, PyObject *out) {
    return scan_level(c, sb, out, &SCOPE_SPANS);
}

/* {"resource": {"attributes": [...]}, "scopeSpans": [...]} -> (attrs_json, scopes) */
static const Level RESOURCE_SPANS = {"resource", "scopeSpans", "instrumentationLibrarySpans",
                                     scan_resource, scan_scope_spans, 2};

static int scan_resource_spans(Cur *c, SpanBufs *sb, PyObject *out) {
    return scan_level(c, sb, out, &RESOURCE_SPANS);
}

/* Scratch buffers live per call, not in a global: a collection triggered by an allocation can
 * run finalizers (Python code) that may release the GIL, and another thread's convert() would
 * then write into the same buffers. One allocation or two a line is nothing beside its spans. */
static void span_bufs_free(SpanBufs *sb) {
    PyMem_Free(sb->attrs.data);
    PyMem_Free(sb->scratch.data);
    PyMem_Free(sb->keys_at);
    PyMem_Free(sb->keys_len);
    PyMem_Free(sb->slots);
}

static PyObject *convert(PyObject *self, PyObject *arg) {
    (void)self;
    if (g_n_row < 0) {
        PyErr_SetString(PyExc_RuntimeError, "_fastotlp.configure() was not called");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Cur c = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    SpanBufs sb;
    memset(&sb, 0, sizeof sb);
    PyObject *out = PyList_New(0);
    int r = ERR, seen = 0;
    Str k;
    if (out) {
        EACH_FIELD(&c, k, r, {
            if (key_is(&k, "resourceSpans")) {
                /* null: the typed path's "no spans" too; then Python says what the line is */
                if (seen++ || is_null(&c)) {
                    r = GIVE_UP;
                    break;
                }
                if ((r = scan_array_of(&c, &sb, out, scan_resource_spans)) != OK) break;
            } else if (key_is(&k, "resourceMetrics")) {
                r = GIVE_UP; /* both signals in one request: Python reads both */
                break;
            } else if ((r = skip_value(&c, 1)) != OK) {
                break;
            }
        });
    }
    if (r == OK && (!seen || peek(&c) != -1)) r = GIVE_UP; /* no spans, or trailing bytes */
    span_bufs_free(&sb);
    PyBuffer_Release(&view);
    if (r == OK) return out;
    Py_XDECREF(out);
    if (r == ERR) return NULL;
    Py_RETURN_NONE;
}

static PyObject *configure(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *names[] = {"primary", "fallback", "genai_prefixes", "n_row", "fixed",
                            "shared_columns", "loads", "dumps", NULL};
    PyObject *primary, *fallback, *prefixes, *fixed, *shared, *loads, *dumps;
    Py_ssize_t n_row;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO!nO!OOO", names, &PyDict_Type, &primary,
                                     &fallback, &PyTuple_Type, &prefixes, &n_row,
                                     &PyDict_Type, &fixed, &shared, &loads, &dumps))
        return NULL;
    static const char *fields[] = {"trace_id", "span_id", "parent_span_id", "name", "kind",
                                   "start_ns", "end_ns", "duration_ns", "status_code"};
    Py_ssize_t *slots[] = {&I_TRACE, &I_SPAN, &I_PARENT, &I_NAME, &I_KIND,
                           &I_START, &I_END, &I_DUR, &I_STATUS};
    Py_ssize_t got[9];
    for (int i = 0; i < 9; i++) {
        PyObject *v = PyDict_GetItemString(fixed, fields[i]);
        if (!v) {
            PyErr_Format(PyExc_KeyError, "fixed has no index for %s", fields[i]);
            return NULL;
        }
        got[i] = PyLong_AsSsize_t(v);
        if (got[i] == -1 && PyErr_Occurred()) return NULL;
        if (got[i] < 0 || got[i] >= n_row) {
            PyErr_Format(PyExc_ValueError, "index of %s out of range", fields[i]);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(prefixes, i))) {
            PyErr_SetString(PyExc_TypeError, "genai_prefixes must be a tuple of str");
            return NULL;
        }
    }
    for (int i = 0; i < 9; i++) *slots[i] = got[i];
    table_clear(&g_keys);
    table_clear(&g_vals);
    Py_INCREF(shared);
    Py_XSETREF(g_shared_columns, shared);
    Py_INCREF(primary);
    Py_XSETREF(g_primary, primary);
    Py_INCREF(fallback);
    Py_XSETREF(g_fallback, fallback);
    Py_INCREF(prefixes);
    Py_XSETREF(g_prefixes, prefixes);
    Py_INCREF(loads);
    Py_XSETREF(g_loads, loads);
    Py_INCREF(dumps);
    Py_XSETREF(g_dumps, dumps);
    g_n_row = n_row;
    Py_RETURN_NONE;
}

/* transpose(rows, n) -> n lists: column j holds rows[i][j]. Rows are tuples or lists of at
 * least n items. Walking rows in memory order and writing n columns is what makes it cheap: the
 * same transposition in Python (zip(*rows)) walks every row once per column. */
static PyObject *transpose(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *rows;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &rows, &n)) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    Py_ssize_t m = PyList_GET_SIZE(rows);
    PyObject *cols = PyList_New(n);
    if (!cols) return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *col = PyList_New(m);
        if (!col) {
            Py_DECREF(cols);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(col, i, Py_None);
        }
        PyList_SET_ITEM(cols, j, col);
    }
    PyObject **colv = PyMem_Malloc(sizeof(PyObject *) * (size_t)(n ? n : 1));
    if (!colv) {
        Py_DECREF(cols);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t j = 0; j < n; j++) colv[j] = PyList_GET_ITEM(cols, j);
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject **items;
        Py_ssize_t len;
        if (PyTuple_Check(row)) {
            items = &PyTuple_GET_ITEM(row, 0);
            len = PyTuple_GET_SIZE(row);
        } else if (PyList_Check(row)) {
            items = ((PyListObject *)row)->ob_item;
            len = PyList_GET_SIZE(row);
        } else {
            len = -1;
            items = NULL;
        }
        if (len < n) {
            PyMem_Free(colv);
            Py_DECREF(cols);
            PyErr_Format(PyExc_ValueError, "row %zd is not a tuple or list of %zd items", i, n);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *v = items[j];
            if (v != Py_None) {
                PyObject **slot = &((PyListObject *)colv[j])->ob_item[i];
                Py_INCREF(v);
                Py_DECREF(*slot);
                *slot = v;
            }
        }
    }
    PyMem_Free(colv);
    return cols;
}

static PyMethodDef methods[] = {
    {"transpose", transpose, METH_VARARGS,
     "transpose(rows, n) -> n column lists of the first n items of each row"},
    {"convert", convert, METH_O,
     "convert(line) -> rows of one OTLP/JSON traces request, or None for the Python path"},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(primary, fallback, genai_prefixes, n_row, fixed, shared_columns, loads, dumps)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastotlp",
    "Compiled fast path of the OTLP/JSON span converter (see otlp_json.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastotlp(void) { return PyModule_Create(&module); }

/* Host-side kernels of the detect path: the input fill, and for post-processing candidate
 * selection, decoding and greedy NMS.
 *
 * retinaface.transform and retinaface.postprocess use them when this module is built and fall back
 * to OpenCV, NumPy and torchvision.ops.nms otherwise; tests/test_detect_kernels.py checks that both
 * give the same batches, indices and detections bit for bit. They exist because of when they run:
 * right after the network's forward pass, when the core's caches and branch predictors hold the
 * runtime's state. There torchvision's NMS of ~300 scattered boxes took 0.35-0.40 ms (0.07 ms timed
 * over and over on the same boxes, its branches then predicted); this branch-free loop takes
 * 0.02 ms (scratch timings; docs/edge.md has the figures bench_detect.py --runtimes prints for the
 * whole post-processing).
 *
 * fill_batch(image, height, width, row_stride, mean_b, mean_g, mean_r, out, out_row_stride, plane_size)
 *   out = image - mean for the height x width BGR uint8 pixels (rows row_stride bytes apart), in
 *   float32 arithmetic (NumPy's image.astype(float32) - float32(mean)), in one pass. plane_size > 0:
 *   into three float32 planes plane_size values apart with rows out_row_stride apart (an NCHW
 *   batch); 0: interleaved, rows out_row_stride values apart (an NHWC batch). At 640x480 OpenCV
 *   took 0.15 ms (a split and three subtractions, NCHW) and 0.12 ms (one subtraction, NHWC)
 *   against 0.08 and 0.05 ms (benchmarks/bench_detect.py --runtimes, transform column).
 *
 * top_candidates(conf, offset, stride, count, threshold, limit, out) -> n
 *   conf: float32 buffer; the score of prior i is conf[offset + i * stride]. Writes to out (int64)
 *   the priors whose score is > threshold (compared in float32, as NumPy and torch compare a float32
 *   array with a Python float), by decreasing score, equal scores by increasing index (a stable
 *   sort), at most limit of them (limit < 0: no cap); returns how many.
 *
 * decode(loc, conf, landms, priors, candidates, sizes, v0, width, height, scale_x, scale_y, out)
 *   The detections (count, 15) of the candidate priors, in their order: box x1 y1 x2 y2, score,
 *   five landmark x y pairs, in original-image pixels. loc (P, 4), conf (P, 2), landms (P, 10) and
 *   priors (P, 4, cx cy w h) are float32; candidates int64 (count); sizes (count, 2) float32 holds
 *   exp(loc[c, 2:] * v1), v0 and v1 being the box variances, computed by the caller with torch's exp (the reference's
 *   rounding). BoxCoder's NumPy decoding operation by operation: centre = prior_c + loc * v0 *
 *   prior_wh, size = prior_wh * sizes, top-left = centre - size / 2, bottom-right = top-left +
 *   size, times the input width / height, divided by the resize scale when it is not 1.
 *
 * nms(rows, stride, count, pad, threshold, out) -> n
 *   rows: float32 buffer of count rows of stride values, columns 0-3 the boxes x1 y1 x2 y2, taken
 *   in this order (highest score first). pad is added to x2 and y2 first (1.0: the reference's
 *   "+1 pixel" convention). Writes the kept rows' indices to out (int64); returns how many.
 *   torchvision.ops.nms's arithmetic, operation by operation: area = (x2 - x1) * (y2 - y1),
 *   overlap = inter / (area_i + area_j - inter) in float32, suppressed when overlap > threshold
 *   (compared as a double, like torchvision; here as a float against float_threshold's limit,
 *   which decides every float alike). Built with -ffp-contract=off so no multiply-add is fused.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one copy per instruction set, picked at load time: the loops run 8 floats wide with AVX2 or AVX-512
 * (GCC keeps to 256-bit vectors there), 4 wide otherwise */
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* ---- input fill ----------------------------------------------------------------------------- */

VECTOR_CLONES
static void fill_bgr_planes(const uint8_t *restrict image, Py_ssize_t height, Py_ssize_t width, Py_ssize_t row_stride,
                            float mean_b, float mean_g, float mean_r, float *restrict out, Py_ssize_t out_width,
                            Py_ssize_t plane_size) {
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t *row = image + y * row_stride;
        float *restrict blue = out + y * out_width;
        float *restrict green = blue + plane_size;
        float *restrict red = green + plane_size;
        for (Py_ssize_t x = 0; x < width; x++) {
            blue[x] = (float)row[3 * x] - mean_b;
            green[x] = (float)row[3 * x + 1] - mean_g;
            red[x] = (float)row[3 * x + 2] - mean_r;
        }
    }
}

VECTOR_CLONES
static void fill_bgr_interleaved(const uint8_t *restrict image, Py_ssize_t height, Py_ssize_t width,
                                 Py_ssize_t row_stride, float mean_b, float mean_g, float mean_r, float *restrict out,
                                 Py_ssize_t out_row_stride) {
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t *row = image + y * row_stride;
        float *restrict pixels = out + y * out_row_stride;
        for (Py_ssize_t x = 0; x < width; x++) {
            pixels[3 * x] = (float)row[3 * x] - mean_b;
            pixels[3 * x + 1] = (float)row[3 * x + 1] - mean_g;
            pixels[3 * x + 2] = (float)row[3 * x + 2] - mean_r;
        }
    }
}

/* ---- candidate selection --------------------------------------------------------------------- */

typedef struct {
    float score;
    int64_t index;
} candidate;

static int by_score_then_index(const void *a, const void *b) {
    const candidate *x = (const candidate *)a, *y = (const candidate *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static Py_ssize_t select_candidates(const float *conf, Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t count,
                                    float threshold, Py_ssize_t limit, candidate *work, int64_t *out) {
    Py_ssize_t found = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const float score = conf[offset + i * stride];
        if (score > threshold) {
            work[found].score = score;
            work[found].index = i;
            found++;
        }
    }
    qsort(work, (size_t)found, sizeof(candidate), by_score_then_index);
    if (limit >= 0 && found > limit) found = limit;
    for (Py_ssize_t i = 0; i < found; i++) out[i] = work[i].index;
    return found;
}

/* ---- decoding -------------------------------------------------------------------------------- */

#define DETECTION_COLUMNS 15
#define LANDMARK_VALUES 10

static void decode_rows(const float *loc, const float *conf, const float *landms, const float *priors,
                        const int64_t *candidates, Py_ssize_t count, const float *sizes, float v0, float width,
                        float height, float scale_x, float scale_y, int rescale, float *out) {
    for (Py_ssize_t i = 0; i < count; i++) {
        const int64_t c = candidates[i];
        const float *prior = priors + 4 * c, *delta = loc + 4 * c, *points = landms + LANDMARK_VALUES * c;
        float *row = out + DETECTION_COLUMNS * i;
        const float pw = prior[2], ph = prior[3];
        const float cx = prior[0] + delta[0] * v0 * pw, cy = prior[1] + delta[1] * v0 * ph;
        const float w = pw * sizes[2 * i], h = ph * sizes[2 * i + 1];
        const float x1 = cx - w / 2, y1 = cy - h / 2;
        row[0] = x1 * width;
        row[1] = y1 * height;
        row[2] = (x1 + w) * width;
        row[3] = (y1 + h) * height;
        row[4] = conf[2 * c + 1];
        for (int k = 0; k < LANDMARK_VALUES; k += 2) {
            row[5 + k] = (prior[0] + points[k] * v0 * pw) * width;
            row[6 + k] = (prior[1] + points[k + 1] * v0 * ph) * height;
        }
        if (rescale) {  /* back to the original image: x by scale_x, y by scale_y */
            row[0] /= scale_x;
            row[1] /= scale_y;
            row[2] /= scale_x;
            row[3] /= scale_y;
            for (int k = 0; k < LANDMARK_VALUES; k += 2) {
                row[5 + k] /= scale_x;
                row[6 + k] /= scale_y;
            }
        }
    }
}

/* ---- greedy NMS ------------------------------------------------------------------------------ */

/* the float limit with (f > limit) == ((double)f > threshold) for every float f: the threshold
 * itself when a float holds it exactly, else the float just below it */
static float float_threshold(double threshold) {
    float limit = (float)threshold;
    if ((double)limit > threshold) limit = nextafterf(limit, -INFINITY);
    return limit;
}

VECTOR_CLONES
static Py_ssize_t greedy_nms(const float *rows, Py_ssize_t stride, Py_ssize_t count, float pad, float limit,
                             float *restrict x1, float *restrict y1, float *restrict x2, float *restrict y2,
                             float *restrict area, unsigned char *restrict suppressed,
                             int64_t *out) {
    for (Py_ssize_t i = 0; i < count; i++) {
        const float *row = rows + i * stride;
        x1[i] = row[0];
        y1[i] = row[1];
        x2[i] = row[2] + pad;
        y2[i] = row[3] + pad;
        area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
        suppressed[i] = 0;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (suppressed[i]) continue;
        out[kept++] = i;
        const float ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
        /* every later box, suppressed or not: the same flags as skipping suppressed ones, and no
         * branch in the loop, so it vectorizes. The selects are std::max / std::min as torchvision
         * writes them, so NaN and signed zeros behave alike. */
        for (Py_ssize_t j = i + 1; j < count; j++) {
            const float xx1 = ix1 < x1[j] ? x1[j] : ix1;
            const float yy1 = iy1 < y1[j] ? y1[j] : iy1;
            const float xx2 = x2[j] < ix2 ? x2[j] : ix2;
            const float yy2 = y2[j] < iy2 ? y2[j] : iy2;
            const float dw = xx2 - xx1, dh = yy2 - yy1;
            const float w = 0.0f < dw ? dw : 0.0f;
            const float h = 0.0f < dh ? dh : 0.0f;
            const float inter = w * h;
            const float overlap = inter / (iarea + area[j] - inter);
            suppressed[j] |= (unsigned char)(overlap > limit);
        }
    }
    return kept;
}

/* ---- Python bindings ------------------------------------------------------------------------- */

static int check_room(const Py_buffer *buffer, Py_ssize_t items, Py_ssize_t item_size, const char *name) {
    if (items < 0 || buffer->len / item_size < items) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd items of %zd bytes needed", name, buffer->len,
                     items, item_size);
        return 0;
    }
    return 1;
}

/* plane_size > 0: three planes (NCHW), out_row_stride the plane width; 0: interleaved (NHWC) rows */
static PyObject *fill_batch(PyObject *self, PyObject *args) {
    Py_buffer image, out;
    Py_ssize_t height, width, row_stride, out_row_stride, plane_size;
    float mean_b, mean_g, mean_r;
    if (!PyArg_ParseTuple(args, "y*nnnfffw*nn", &image, &height, &width, &row_stride, &mean_b, &mean_g, &mean_r,
                          &out, &out_row_stride, &plane_size))
        return NULL;
    PyObject *result = NULL;
    const int planar = plane_size > 0;
    const Py_ssize_t row_values = planar ? width : 3 * width;  /* output values of one image row */
    if (height < 0 || width < 0 || plane_size < 0 || row_stride < 3 * width || out_row_stride < row_values ||
        (planar && plane_size < height * out_row_stride)) {
        PyErr_SetString(PyExc_ValueError, "the image does not fit the batch (or its rows overlap)");
        goto done;
    }
    if (height > 0 && width > 0 &&
        (!check_room(&image, (height - 1) * row_stride + 3 * width, 1, "image") ||
         !check_room(&out, (planar ? 2 * plane_size : 0) + (height - 1) * out_row_stride + row_values, sizeof(float),
                     "out")))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    if (planar)
        fill_bgr_planes((const uint8_t *)image.buf, height, width, row_stride, mean_b, mean_g, mean_r,
                        (float *)out.buf, out_row_stride, plane_size);
    else
        fill_bgr_interleaved((const uint8_t *)image.buf, height, width, row_stride, mean_b, mean_g, mean_r,
                             (float *)out.buf, out_row_stride);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&image);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *top_candidates(PyObject *self, PyObject *args) {
    Py_buffer conf, out;
    Py_ssize_t offset, stride, count, limit;
    double threshold;
    if (!PyArg_ParseTuple(args, "y*nnndnw*", &conf, &offset, &stride, &count, &threshold, &limit, &out)) return NULL;
    PyObject *result = NULL;
    candidate *work = NULL;
    if (offset < 0 || stride < 1 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "offset >= 0, stride >= 1 and count >= 0 are needed");
        goto done;
    }
    if (!check_room(&conf, count ? offset + (count - 1) * stride + 1 : 0, sizeof(float), "conf") ||
        !check_room(&out, count, sizeof(int64_t), "out"))
        goto done;
    work = (candidate *)malloc(sizeof(candidate) * (size_t)(count ? count : 1));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t found;
    Py_BEGIN_ALLOW_THREADS
    found = select_candidates((const float *)conf.buf, offset, stride, count, (float)threshold, limit, work,
                              (int64_t *)out.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(found);
done:
    free(work);
    PyBuffer_Release(&conf);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer loc, conf, landms, priors, candidates, sizes, out;
    double v0, width, height, scale_x, scale_y;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*dddddw*", &loc, &conf, &landms, &priors, &candidates, &sizes, &v0,
                          &width, &height, &scale_x, &scale_y, &out))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t prior_count = priors.len / (Py_ssize_t)(4 * sizeof(float));
    const Py_ssize_t count = candidates.len / (Py_ssize_t)sizeof(int64_t);
    if (!check_room(&loc, 4 * prior_count, sizeof(float), "loc") ||
        !check_room(&conf, 2 * prior_count, sizeof(float), "conf") ||
        !check_room(&landms, LANDMARK_VALUES * prior_count, sizeof(float), "landms") ||
        !check_room(&sizes, 2 * count, sizeof(float), "sizes") ||
        !check_room(&out, DETECTION_COLUMNS * count, sizeof(float), "out"))
        goto done;
    const int64_t *index = (const int64_t *)candidates.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (index[i] < 0 || index[i] >= prior_count) {
            PyErr_Format(PyExc_ValueError, "candidate %zd is prior %lld, outside 0..%zd", i, (long long)index[i],
                         prior_count - 1);
            goto done;
        }
    }
    const int rescale = scale_x != 1.0 || scale_y != 1.0;
    decode_rows((const float *)loc.buf, (const float *)conf.buf, (const float *)landms.buf,
                (const float *)priors.buf, index, count, (const float *)sizes.buf, (float)v0, (float)width,
                (float)height, (float)scale_x, (float)scale_y, rescale, (float *)out.buf);
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&loc);
    PyBuffer_Release(&conf);
    PyBuffer_Release(&landms);
    PyBuffer_Release(&priors);
    PyBuffer_Release(&candidates);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *nms(PyObject *self, PyObject *args) {
    Py_buffer rows, out;
    Py_ssize_t stride, count;
    float pad;
    double threshold;
    if (!PyArg_ParseTuple(args, "y*nnfdw*", &rows, &stride, &count, &pad, &threshold, &out)) return NULL;
    PyObject *result = NULL;
    float *work = NULL;
    if (stride < 4 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "stride >= 4 and count >= 0 are needed");
        goto done;
    }
    if (!check_room(&rows, count * stride, sizeof(float), "rows") ||
        !check_room(&out, count, sizeof(int64_t), "out"))
        goto done;
    /* x1, y1, x2, y2, area, then the suppressed flags */
    work = (float *)malloc(sizeof(float) * 5 * (size_t)count + (size_t)count + 1);
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float limit = float_threshold(threshold);
    Py_ssize_t kept;
    Py_BEGIN_ALLOW_THREADS
    kept = greedy_nms((const float *)rows.buf, stride, count, pad, limit, work, work + count, work + 2 * count,
                      work + 3 * count, work + 4 * count, (unsigned char *)(work + 5 * count), (int64_t *)out.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(kept);
done:
    free(work);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"fill_batch", fill_batch, METH_VARARGS,
     "fill_batch(image, height, width, row_stride, mean_b, mean_g, mean_r, out, out_row_stride, plane_size)"},
    {"top_candidates", top_candidates, METH_VARARGS,
     "top_candidates(conf, offset, stride, count, threshold, limit, out) -> n"},
    {"decode", decode, METH_VARARGS,
     "decode(loc, conf, landms, priors, candidates, sizes, v0, width, height, scale_x, scale_y, out)"},
    {"nms", nms, METH_VARARGS, "nms(rows, stride, count, pad, threshold, out) -> n"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_detect_kernels",
                                    "Host-side kernels of the detect path: input fill, candidate selection, decoding, greedy NMS.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__detect_kernels(void) { return PyModule_Create(&module); }

/* Decoding one rectangle of a baseline JPEG with libjpeg-turbo: the rows above it are entropy-decoded
 * and dropped (jpeg_skip_scanlines), the columns outside it are never transformed
 * (jpeg_crop_scanline), and decoding stops after its last row. A training crop covers about a third
 * of a WIDER-sized image, so this does a fraction of a full decode's inverse DCT and colour work.
 *
 * retinaface.data.fast_decode wraps it and checks, once per process, that its pixels equal
 * cv2.imdecode's; that module says which files may take this path.
 *
 * decode_region(data, x, y, width, height) -> (bytearray, row_width, x_offset)
 *   bytearray: starts with height rows of row_width BGR pixels (it may be longer); column x of the
 *   image is column x_offset of a row. ValueError when libjpeg reports an error or a warning (the caller then decodes the whole
 *   file the usual way) or the rectangle is not inside the image.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "libjpeg-turbo (jpeg_crop_scanline, jpeg_skip_scanlines) is required"
#endif

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} error_manager;

static void leave_on_error(j_common_ptr cinfo) {
    longjmp(((error_manager *)cinfo->err)->jump, 1);
}

/* warnings (corrupt data that libjpeg works around) are counted, not printed: any warning sends
 * the file back to OpenCV, so such files keep OpenCV's behaviour */
static void count_warning(j_common_ptr cinfo, int level) {
    if (level < 0) cinfo->err->num_warnings++;
}

typedef enum { DECODED = 0, LIBJPEG_ERROR, OUTSIDE, NOT_BGR } outcome;

/* a decoded row is at most this many pixels wider than the rectangle: a margin of one iMCU (at most
 * 4 x 8 pixels) on each side, and the left edge moved down to an iMCU boundary (at most 31 more) */
#define MAX_EXTRA 96

typedef struct {
    const unsigned char *data;
    size_t size;
    int x, y, width, height;
    unsigned char *pixels;          /* room for height rows of width + MAX_EXTRA pixels */
    /* results */
    int row_width, x_offset;
    char message[JMSG_LENGTH_MAX];
} request;

/* all libjpeg work, run without the GIL; nothing here touches Python objects */
static outcome decode(request *req) {
    struct jpeg_decompress_struct cinfo;
    error_manager err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = leave_on_error;
    err.pub.emit_message = count_warning;
    if (setjmp(err.jump)) {
        (*cinfo.err->format_message)((j_common_ptr)&cinfo, req->message);
        jpeg_destroy_decompress(&cinfo);
        return LIBJPEG_ERROR;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, req->data, (unsigned long)req->size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.num_components != 3 || cinfo.jpeg_color_space != JCS_YCbCr) {
        jpeg_destroy_decompress(&cinfo);
        return NOT_BGR;
    }
    cinfo.out_color_space = JCS_EXT_BGR;
    if (req->x < 0 || req->y < 0 || req->width <= 0 || req->height <= 0 ||
        (JDIMENSION)(req->x + req->width) > cinfo.image_width ||
        (JDIMENSION)(req->y + req->height) > cinfo.image_height) {
        jpeg_destroy_decompress(&cinfo);
        return OUTSIDE;
    }
    jpeg_start_decompress(&cinfo);
    /* one iMCU of margin on each side: the chroma upsampler replicates the edge column of a cropped
     * decode, so the rectangle's edge columns equal a full decode's only when they are interior */
    int margin = cinfo.max_h_samp_factor * DCTSIZE;
    int left = req->x > margin ? req->x - margin : 0;
    int right = req->x + req->width + margin;
    if (right > (int)cinfo.output_width) right = (int)cinfo.output_width;
    JDIMENSION x_offset = (JDIMENSION)left, row_width = (JDIMENSION)(right - left);
    jpeg_crop_scanline(&cinfo, &x_offset, &row_width);   /* moves x_offset down to an iMCU edge */
    if (req->y > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)req->y);
    if (cinfo.output_width > (JDIMENSION)(req->width + MAX_EXTRA)) {   /* cannot happen: see MAX_EXTRA */
        strcpy(req->message, "cropped row wider than expected");
        jpeg_destroy_decompress(&cinfo);
        return LIBJPEG_ERROR;
    }
    size_t stride = (size_t)cinfo.output_width * 3;
    unsigned char *pixels = req->pixels;
    for (int row = 0; row < req->height;) {
        JSAMPROW rows[16];
        int want = req->height - row < 16 ? req->height - row : 16;
        for (int k = 0; k < want; k++) rows[k] = pixels + (size_t)(row + k) * stride;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)want);
        if (got == 0) {
            strcpy(req->message, "no more scanlines");
            jpeg_destroy_decompress(&cinfo);
            return LIBJPEG_ERROR;
        }
        row += (int)got;
    }
    int warnings = (int)err.pub.num_warnings;
    jpeg_abort_decompress(&cinfo);   /* the rows below the rectangle are not needed */
    jpeg_destroy_decompress(&cinfo);
    if (warnings > 0) {
        strcpy(req->message, "libjpeg warned about the data");
        return LIBJPEG_ERROR;
    }
    req->row_width = (int)cinfo.output_width;
    req->x_offset = req->x - (int)x_offset;
    return DECODED;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    request req;
    memset(&req, 0, sizeof(req));
    if (!PyArg_ParseTuple(args, "y*iiii", &data, &req.x, &req.y, &req.width, &req.height)) return NULL;
    req.data = (const unsigned char *)data.buf;
    req.size = (size_t)data.len;
    if (req.width <= 0 || req.height <= 0 || req.width > (1 << 16) || req.height > (1 << 16)) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "the rectangle is not inside the image");
        return NULL;
    }
    /* filled without the GIL: nothing else holds a reference to it yet */
    PyObject *pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(req.width + MAX_EXTRA) * 3 * req.height);
    if (pixels == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    req.pixels = (unsigned char *)PyByteArray_AS_STRING(pixels);
    outcome result;
    Py_BEGIN_ALLOW_THREADS
    result = decode(&req);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (result != DECODED) Py_DECREF(pixels);
    switch (result) {
    case LIBJPEG_ERROR:
        PyErr_Format(PyExc_ValueError, "libjpeg: %s", req.message);
        return NULL;
    case OUTSIDE:
        PyErr_SetString(PyExc_ValueError, "the rectangle is not inside the image");
        return NULL;
    case NOT_BGR:
        PyErr_SetString(PyExc_ValueError, "not a three-component YCbCr JPEG");
        return NULL;
    case DECODED:
        break;
    }
    return Py_BuildValue("(Nii)", pixels, req.row_width, req.x_offset);
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, x, y, width, height) -> (bytearray, row_width, x_offset)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region",
                                    "Region decoding of baseline JPEGs with libjpeg-turbo.", -1, methods};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }

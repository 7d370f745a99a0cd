/*
 * fe_protocol: the board side of the facemask-edge serial protocol (firmware/PROTOCOL.md).
 *
 * Portable C99, no board headers, no heap. The sketch owns one fe_protocol_t (static), hands it
 * the TFLM input tensor as `input_buffer` (image chunks land there: no copy), a write function
 * (Serial.write) and an inference function, then feeds every byte it reads from the serial port:
 *
 *     static fe_protocol_t proto;
 *     fe_protocol_init(&proto, &info, input->data.int8, serial_write, run_inference, NULL);
 *     if (model_failed) fe_protocol_set_error(&proto, FE_ERR_MODEL_INIT);
 *     loop: n = Serial.read(buf, ...); fe_protocol_feed(&proto, buf, n);
 *           if (!fe_protocol_in_session(&proto)) { camera loop, print PRED lines }
 *
 * fe_protocol_feed() calls `infer` synchronously when the last chunk of an image has arrived,
 * then writes the RESULT. While `infer` runs the sketch does not read the port: the bytes the host
 * keeps sending wait in the serial driver's receive buffer, which must hold FE_RX_WINDOW bytes
 * (see PROTOCOL.md, "What the board buffers").
 */
#ifndef FE_PROTOCOL_H
#define FE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FE_PROTOCOL_VERSION 1

/* Largest frame body the board accepts (IMAGE_CHUNK: 6 header bytes + data). Reported in INFO;
 * the host never sends a longer body. Only fe_protocol_t.scratch depends on it indirectly. */
#ifndef FE_MAX_FRAME_BODY
#define FE_MAX_FRAME_BODY 4096
#endif

/* Bytes the host may have in flight without an ACK. The serial driver's receive buffer must hold
 * this many bytes (USB CDC flow-controls by itself; on a UART call Serial.setRxBufferSize). */
#ifndef FE_RX_WINDOW
#define FE_RX_WINDOW 8192
#endif

/* Most output classes a RESULT carries (fe_result_t.scores). The host refuses more
 * (facemask_edge.device.framing.MAX_CLASSES), so changing it changes the protocol. */
#ifndef FE_MAX_CLASSES
#define FE_MAX_CLASSES 16
#endif
#if FE_MAX_CLASSES < 1 || 4 + 8 + FE_MAX_CLASSES + 4 > 200
#error "FE_MAX_CLASSES must be 1..184: a RESULT frame must fit fe_protocol_t.raw"
#endif
/* A model with more classes than a RESULT carries cannot run: stop the build when the sketch's
 * model_settings.h comes first (the generated facemask_edge.h includes it first). Without it,
 * fe_protocol_init checks info->num_classes at run time (INFO then says FE_ERR_MODEL_INIT). */
#if defined(FE_NUM_CLASSES) && (FE_NUM_CLASSES < 1 || FE_NUM_CLASSES > FE_MAX_CLASSES)
#error "FE_NUM_CLASSES must be 1..FE_MAX_CLASSES (16): retrain with fewer classes"
#endif

/* Results the board remembers, so a lost RESULT can be asked for again (RESULT_REQ). */
#ifndef FE_RESULT_HISTORY
#define FE_RESULT_HISTORY 4
#endif

/* Optional features a host asks for in HELLO's second byte (PROTOCOL.md 3.1); a board that
 * supports them appends their fields to INFO and RESULT. Without that byte nothing changes. */
#define FE_FEATURE_COUNTS 0x01 /* RESULT carries the inference's cycle/instruction count */
#define FE_FEATURES_SUPPORTED FE_FEATURE_COUNTS

/* What the counts count (INFO `counter`). */
#define FE_COUNTER_NONE 0
#define FE_COUNTER_CYCLES 1       /* CPU clock cycles (e.g. the Cortex-M DWT cycle counter) */
#define FE_COUNTER_INSTRUCTIONS 2 /* executed instructions (an emulator with exact counting) */

/* Error codes (ERROR message, INFO status, fe_infer_fn return). */
#define FE_OK 0
#define FE_ERR_MODEL_INIT 1   /* the model could not be loaded (schema version, missing op) */
#define FE_ERR_ALLOCATE 2     /* AllocateTensors failed: arena too small */
#define FE_ERR_BAD_FRAME 3    /* CRC, COBS or length error */
#define FE_ERR_WRONG_SIZE 4   /* chunk past the end of the input tensor, or wrong tensor shape */
#define FE_ERR_INVOKE 5       /* Invoke() failed */
#define FE_ERR_BUSY 6         /* request not possible now */
#define FE_ERR_UNKNOWN_MSG 7  /* message type not known to this protocol version */
#define FE_ERR_SEQUENCE 8     /* no session (HELLO first), or chunk out of order */
#define FE_ERR_VERSION 9      /* the host speaks a protocol version the board does not */
#define FE_ERR_NO_RESULT 10   /* RESULT_REQ for an image the board no longer remembers */

/* Message types. Host to board: 0x01..0x7F; board to host: 0x81..0xFF. */
#define FE_MSG_HELLO 0x01
#define FE_MSG_CHUNK 0x02
#define FE_MSG_RESULT_REQ 0x03
#define FE_MSG_BYE 0x04
#define FE_MSG_FRAME_REQ 0x05 /* protocol 1, addition: the next camera frame, please */
#define FE_MSG_INFO 0x81
#define FE_MSG_ACK 0x82
#define FE_MSG_NAK 0x83
#define FE_MSG_RESULT 0x84
#define FE_MSG_ERROR 0x85
#define FE_MSG_BYE_ACK 0x86
#define FE_MSG_FRAME 0x87     /* a piece of the camera frame's input tensor */
#define FE_MSG_FRAME_END 0x88 /* the camera frame's label, scores and inference time */

/* Frame layout before COBS: type u8, seq u8, body length u16 LE, body, CRC-32 u32 LE. */
#define FE_FRAME_HEADER 4
#define FE_FRAME_CRC 4
#define FE_CHUNK_HEADER 6 /* image id u16 LE, offset u32 LE */
#define FE_FRAME_DATA_MAX 184 /* input bytes per FRAME: body 6 + 184 = 190, within raw[] */

typedef struct {
  const char *board;            /* e.g. "nano33ble" */
  const char *firmware_version; /* e.g. "0.1.0" */
  const char *model_sha256;     /* 64 lowercase hex digits of model_int8.tflite */
  uint16_t input_width, input_height;
  uint8_t input_channels;
  uint8_t num_classes;
  uint32_t arena_bytes;    /* arena_used_bytes() after AllocateTensors */
  uint32_t free_ram_bytes; /* heap + stack left, as the board measures it */
} fe_device_info_t;

typedef void (*fe_write_fn)(void *ctx, const uint8_t *data, size_t len);
/* Run the model on `input` (the input_buffer given to init); write num_classes int8 scores and
 * the inference time in microseconds (board timer). Returns FE_OK or an FE_ERR_* code. */
typedef int (*fe_infer_fn)(void *ctx, const int8_t *input, int8_t *scores, uint32_t *micros);

typedef struct {
  uint16_t image_id;
  uint8_t valid;
  uint8_t label;
  uint32_t micros;
  uint32_t count; /* cycles/instructions of the inference (FE_FEATURE_COUNTS), 0 if unknown */
  int8_t scores[FE_MAX_CLASSES];
} fe_result_t;

/* Everything the protocol keeps. Caller allocates (static); fields are private. */
typedef struct fe_protocol {
  const fe_device_info_t *info;
  int8_t *input;
  uint32_t input_bytes;
  fe_write_fn write;
  fe_infer_fn infer;
  void *ctx;
  uint32_t baud; /* reported in INFO; 0 = USB / unknown (fe_protocol_set_baud) */

  int error;       /* FE_OK or the code from fe_protocol_set_error */
  int in_session;  /* between HELLO and BYE */

  /* Streaming COBS decoder of the frame being received. */
  uint8_t cobs_code;  /* code byte of the current COBS block (0: expecting a code byte) */
  uint8_t cobs_left;  /* data bytes left in the current block */
  uint8_t overflow;   /* frame longer than FE_MAX_FRAME_BODY: discard until 0x00 */
  uint32_t frame_pos; /* decoded bytes of this frame that have left the CRC delay line */
  uint8_t tail[FE_FRAME_CRC]; /* delay line: the last 4 decoded bytes may be the CRC */
  uint8_t tail_n;
  uint32_t crc;               /* running CRC-32 of bytes that left the delay line */
  uint8_t head[FE_FRAME_HEADER + FE_CHUNK_HEADER]; /* frame header + chunk header */
  uint8_t scratch[64];        /* bodies of control messages */
  uint8_t chunk_ok;           /* this frame is the expected chunk: data goes to input */

  /* Image being received. */
  uint8_t image_active;  /* a chunk at offset 0 started it, RESULT not sent yet */
  uint8_t any_id;        /* after HELLO: the next image may have any id */
  uint16_t image_id;     /* current (image_active) or last finished image */
  uint32_t expected;     /* next offset the board accepts */
  uint8_t last_seq;      /* seq of the last frame with a good CRC */
  uint8_t nak_sent;      /* unused by the host logic; kept for statistics */

  fe_result_t history[FE_RESULT_HISTORY];
  uint8_t history_next;

  /* Camera frame asked for with FRAME_REQ (sent by fe_protocol_camera, then forgotten). */
  uint8_t frame_wanted;
  uint8_t frame_seq;   /* seq of the FRAME_REQ: the FRAME and FRAME_END messages carry it */
  uint16_t frame_no;   /* camera frames sent so far (FRAME/FRAME_END `frame`) */
  /* Optional features (fe_protocol_set_counter; HELLO's features byte). */
  uint8_t features;         /* negotiated in the current session */
  uint8_t hello_ext;        /* the last HELLO had a features byte: INFO carries the extension */
  uint8_t counter_kind;     /* FE_COUNTER_* */
  uint32_t preprocess_count; /* count of one camera-frame preprocessing, 0 if not measured */
  uint32_t (*last_count)(void); /* count of the inference that just ran */

  /* Statistics (not on the wire unless asked). */
  uint32_t frames_ok, frames_bad, naks, images;

  uint8_t raw[200]; /* outgoing frame before COBS (a FRAME piece, 198 bytes, is the largest) */
  uint8_t tx[208];  /* the same frame COBS-encoded, with delimiters */
} fe_protocol_t;

void fe_protocol_init(fe_protocol_t *p, const fe_device_info_t *info, int8_t *input_buffer,
                      fe_write_fn write, fe_infer_fn infer, void *ctx);
/* The board cannot run the model (e.g. FE_ERR_MODEL_INIT): INFO carries the code, and every
 * image is answered with ERROR(code). FE_OK does not clear the error fe_protocol_init sets for
 * a device description it cannot serve (num_classes 0 or above FE_MAX_CLASSES). */
void fe_protocol_set_error(fe_protocol_t *p, int fe_err_code);
/* The UART speed to report in INFO (0 for USB CDC). Optional. */
void fe_protocol_set_baud(fe_protocol_t *p, uint32_t baud);
/* Report per-inference counts (FE_FEATURE_COUNTS): `kind` is FE_COUNTER_*, `last_count` returns
 * the count of the inference that just ran, `preprocess_count` that of one camera-frame
 * preprocessing (0: not measured). Optional: without it the board offers no features. */
void fe_protocol_set_counter(fe_protocol_t *p, uint8_t kind, uint32_t (*last_count)(void),
                             uint32_t preprocess_count);
/* Feed bytes read from the serial port, any amount, any split. May call write and infer. */
void fe_protocol_feed(fe_protocol_t *p, const uint8_t *data, size_t len);
/* 1 between HELLO and BYE: the sketch pauses the camera loop and prints nothing. */
int fe_protocol_in_session(const fe_protocol_t *p);

/*
 * The camera loop's inference: run `infer` on the input buffer (which the sketch has just filled
 * with a preprocessed camera frame) and return its code, scores and time. When a host asked with
 * FRAME_REQ, first send the input buffer as FRAME messages (TFLM may reuse the input tensor's
 * memory during Invoke, and there is no second image buffer), then FRAME_END with the answer.
 * When nobody asked, this is `infer` plus one test: the camera loop is not slowed.
 * Call only outside a session (fe_protocol_in_session() == 0).
 */
int fe_protocol_camera(fe_protocol_t *p, int8_t *scores, uint32_t *micros);

/* Helpers shared with host tests (golden vectors). */
uint32_t fe_crc32(uint32_t crc, const uint8_t *data, size_t len); /* start with crc = 0 */
/* COBS-encode `len` bytes into `out` between two 0x00 delimiters. Returns bytes written;
 * `out` needs len + len / 254 + 3 bytes. */
size_t fe_cobs_frame(const uint8_t *data, size_t len, uint8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* FE_PROTOCOL_H */

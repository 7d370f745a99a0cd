/* sim_shim.c: what the Python board simulator needs besides fe_protocol.h to drive the firmware's
 * protocol code through ctypes (it allocates fe_protocol_t itself). Host builds only. */
#include <stddef.h>

#include "fe_protocol.h"

size_t fe_sizeof_protocol(void) { return sizeof(fe_protocol_t); }

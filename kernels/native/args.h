/* N-API argument readers shared by the addon's entry points. */
#ifndef INVARX_ARGS_H
#define INVARX_ARGS_H
#include <node_api.h>
#include <math.h>
#include <stddef.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "invarx native: " #call " failed"); return NULL; } } while (0)

/* A typed array of type `want`: its data and length (0 when v is not one). */
static inline int typed_arg(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  napi_typedarray_type t;
  if (napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) != napi_ok || t != want) return 0;
  return 1;
}

static inline int f32_arg(napi_env env, napi_value v, float **data, size_t *len) {
  return typed_arg(env, v, napi_float32_array, (void **)data, len);
}

static inline int i32_arg(napi_env env, napi_value v, int **data, size_t *len) {
  return typed_arg(env, v, napi_int32_array, (void **)data, len);
}

static inline int size_arg(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d != floor(d) || d > 9007199254740991.0) return 0;
  *out = (size_t)d;
  return 1;
}

#endif

/* Decode attention over resident KV caches (attend.c). */
#ifndef INVARX_ATTEND_H
#define INVARX_ATTEND_H
#include <node_api.h>

napi_value attend_js(napi_env env, napi_callback_info info);

#endif

{
  "targets": [{
    "target_name": "invarx_native",
    "sources": ["matmul.c", "pool.c", "attend.c"],
    "cflags": ["-O3", "-march=native", "-ffp-contract=off"],
    "cflags!": ["-fno-tree-vectorize"],
    "libraries": ["-lpthread", "-lm"]
  }]
}

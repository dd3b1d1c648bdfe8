;; invarx CPU kernels: WebAssembly SIMD (v128, f32x4), hand-written.
;;
;; All pointers are byte offsets into the imported (shared) memory; the TypeScript side
;; (kernels/wasm/backend.ts) lays the operands out in an arena and calls these functions.
;;
;; Main product: y[n, N] = x[n, K] · w[N, K]ᵀ (+ y if beta), the linear layer of the
;; forward pass. Both operands run along the contiguous K axis, so w is first packed into
;; panels of 8 output columns with the 8 values of one k next to each other
;; ("pack_w"); then a 4×8 register tile of y is held in 8 f32x4 accumulators while k
;; advances: per k, 2 panel loads, 4 broadcast loads of x, 8 multiply-adds.
;;
;; Why 4×8 and no unrolling: V8's TurboFan hoists every load of a basic block above the
;; arithmetic, so the live set per iteration is 2 (panel) + MR (broadcasts) + 2·MR
;; (accumulators) vectors. x64 gives wasm 15 allocatable xmm registers: MR=4 needs 14 and
;; stays in registers (measured ~59 GFLOP/s on one core, L1-resident); MR=5/6 or any
;; unrolling of the k loop spills and drops to ~40.
;;
;; Cache tiling: K is cut into chunks of at most kc_max columns; the packed panels of one
;; chunk (N·kc·4 bytes) stay in L2 while the 4 rows of x under the tile (4·kc·4 bytes)
;; stay in L1. Chunks after the first accumulate into y.
;;
;; f32x4.relaxed_madd (a·b + c, fused on FMA hardware) is the multiply-add. The loader
;; rewrites it to f32x4.add(f32x4.mul) when relaxed SIMD is unavailable or a strict
;; (unfused, machine-independent) build is asked for; nothing else here changes.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; ---------------------------------------------------------------------------------
  ;; Micro-kernel: the 4×8 tile y[0..4, 0..8] (+)= x[0..4, 0..kc] · panel[0..kc, 0..8].
  ;;   $x    first of 4 rows of x at the chunk's first column; rows $ldx bytes apart
  ;;   $wp   packed panel: kc groups of 8 floats
  ;;   $y    first of 4 rows of y, $ldy bytes apart (8 floats written per row)
  ;;   $beta 0: overwrite y, else add to it
  (func $kernel_4x8 (param $x i32) (param $ldx i32) (param $wp i32) (param $kc i32)
                    (param $y i32) (param $ldy i32) (param $beta i32)
    (local $x1 i32) (local $x2 i32) (local $x3 i32)
    (local $y1 i32) (local $y2 i32) (local $y3 i32)
    (local $b0 v128) (local $b1 v128) (local $a v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $x1 (i32.add (local.get $x) (local.get $ldx)))
    (local.set $x2 (i32.add (local.get $x1) (local.get $ldx)))
    (local.set $x3 (i32.add (local.get $x2) (local.get $ldx)))
    (if (local.get $kc) (then
      (loop $k
        (local.set $b0 (v128.load offset=0 (local.get $wp)))
        (local.set $b1 (v128.load offset=16 (local.get $wp)))
        (local.set $a (v128.load32_splat (local.get $x)))
        (local.set $c00 (f32x4.relaxed_madd (local.get $a) (local.get $b0) (local.get $c00)))
        (local.set $c01 (f32x4.relaxed_madd (local.get $a) (local.get $b1) (local.get $c01)))
        (local.set $a (v128.load32_splat (local.get $x1)))
        (local.set $c10 (f32x4.relaxed_madd (local.get $a) (local.get $b0) (local.get $c10)))
        (local.set $c11 (f32x4.relaxed_madd (local.get $a) (local.get $b1) (local.get $c11)))
        (local.set $a (v128.load32_splat (local.get $x2)))
        (local.set $c20 (f32x4.relaxed_madd (local.get $a) (local.get $b0) (local.get $c20)))
        (local.set $c21 (f32x4.relaxed_madd (local.get $a) (local.get $b1) (local.get $c21)))
        (local.set $a (v128.load32_splat (local.get $x3)))
        (local.set $c30 (f32x4.relaxed_madd (local.get $a) (local.get $b0) (local.get $c30)))
        (local.set $c31 (f32x4.relaxed_madd (local.get $a) (local.get $b1) (local.get $c31)))
        (local.set $wp (i32.add (local.get $wp) (i32.const 32)))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (local.set $x1 (i32.add (local.get $x1) (i32.const 4)))
        (local.set $x2 (i32.add (local.get $x2) (i32.const 4)))
        (local.set $x3 (i32.add (local.get $x3) (i32.const 4)))
        (br_if $k (local.tee $kc (i32.sub (local.get $kc) (i32.const 1)))))))
    (local.set $y1 (i32.add (local.get $y) (local.get $ldy)))
    (local.set $y2 (i32.add (local.get $y1) (local.get $ldy)))
    (local.set $y3 (i32.add (local.get $y2) (local.get $ldy)))
    (if (local.get $beta) (then
      (local.set $c00 (f32x4.add (local.get $c00) (v128.load offset=0 (local.get $y))))
      (local.set $c01 (f32x4.add (local.get $c01) (v128.load offset=16 (local.get $y))))
      (local.set $c10 (f32x4.add (local.get $c10) (v128.load offset=0 (local.get $y1))))
      (local.set $c11 (f32x4.add (local.get $c11) (v128.load offset=16 (local.get $y1))))
      (local.set $c20 (f32x4.add (local.get $c20) (v128.load offset=0 (local.get $y2))))
      (local.set $c21 (f32x4.add (local.get $c21) (v128.load offset=16 (local.get $y2))))
      (local.set $c30 (f32x4.add (local.get $c30) (v128.load offset=0 (local.get $y3))))
      (local.set $c31 (f32x4.add (local.get $c31) (v128.load offset=16 (local.get $y3))))))
    (v128.store offset=0 (local.get $y) (local.get $c00))
    (v128.store offset=16 (local.get $y) (local.get $c01))
    (v128.store offset=0 (local.get $y1) (local.get $c10))
    (v128.store offset=16 (local.get $y1) (local.get $c11))
    (v128.store offset=0 (local.get $y2) (local.get $c20))
    (v128.store offset=16 (local.get $y2) (local.get $c21))
    (v128.store offset=0 (local.get $y3) (local.get $c30))
    (v128.store offset=16 (local.get $y3) (local.get $c31)))

  ;; ---------------------------------------------------------------------------------
  ;; Packs w[N, K] (rows $ldw bytes apart, ≥ 4·K) for matmul_t. Layout: for each K-chunk
  ;; (k0, kc = min(kc_max, K-k0)), at wp + k0·Np·4 (Np = N rounded up to 8), panel p at
  ;; + p·kc·32, holding w[p·8 + j, k0 + k] at + (k·8 + j)·4. Rows past N are zero.
  ;; Full groups of 4 rows × 4 columns move as a 4×4 transpose in registers; the ragged
  ;; row group and column tail go one float at a time.
  (func $pack_w (export "pack_w") (param $w i32) (param $ldw i32) (param $N i32) (param $K i32)
                (param $kc_max i32) (param $wp i32)
    (local $Np i32) (local $k0 i32) (local $kc i32) (local $chunk i32)
    (local $r i32) (local $k i32) (local $j i32) (local $src i32) (local $dst i32)
    (local $rows i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $Np (i32.and (i32.add (local.get $N) (i32.const 7)) (i32.const -8)))
    (local.set $k0 (i32.const 0))
    (block $chunks_done (loop $chunks
      (br_if $chunks_done (i32.ge_u (local.get $k0) (local.get $K)))
      (local.set $kc (select (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0))
                             (i32.lt_u (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0)))))
      (local.set $chunk (i32.add (local.get $wp)
                                 (i32.shl (i32.mul (local.get $k0) (local.get $Np)) (i32.const 2))))
      ;; row groups of 4: r = first row of the group
      (local.set $r (i32.const 0))
      (block $rows_done (loop $rowgroups
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $Np)))
        ;; destination of (k = 0, j = r mod 8) in panel r / 8
        (local.set $dst (i32.add (local.get $chunk)
          (i32.add (i32.mul (i32.shr_u (local.get $r) (i32.const 3)) (i32.shl (local.get $kc) (i32.const 5)))
                   (i32.shl (i32.and (local.get $r) (i32.const 7)) (i32.const 2)))))
        (local.set $src (i32.add (local.get $w)
          (i32.add (i32.mul (local.get $r) (local.get $ldw)) (i32.shl (local.get $k0) (i32.const 2)))))
        (local.set $rows (i32.sub (local.get $N) (local.get $r)))
        (local.set $k (i32.const 0))
        (if (i32.ge_s (local.get $rows) (i32.const 4)) (then
          ;; 4 full rows: transpose 4×4 blocks
          (block $t_done (loop $t
            (br_if $t_done (i32.gt_u (i32.add (local.get $k) (i32.const 4)) (local.get $kc)))
            (local.set $v0 (v128.load (local.get $src)))
            (local.set $v1 (v128.load (i32.add (local.get $src) (local.get $ldw))))
            (local.set $v2 (v128.load (i32.add (local.get $src) (i32.shl (local.get $ldw) (i32.const 1)))))
            (local.set $v3 (v128.load (i32.add (local.get $src) (i32.mul (local.get $ldw) (i32.const 3)))))
            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v0) (local.get $v1)))
            (local.set $t1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v0) (local.get $v1)))
            (local.set $t2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v2) (local.get $v3)))
            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v2) (local.get $v3)))
            (v128.store offset=0 (local.get $dst)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t2)))
            (v128.store offset=32 (local.get $dst)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t2)))
            (v128.store offset=64 (local.get $dst)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t1) (local.get $t3)))
            (v128.store offset=96 (local.get $dst)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t1) (local.get $t3)))
            (local.set $src (i32.add (local.get $src) (i32.const 16)))
            (local.set $dst (i32.add (local.get $dst) (i32.const 128)))
            (local.set $k (i32.add (local.get $k) (i32.const 4)))
            (br $t)))))
        ;; what is left of this row group (column tail, or a ragged group): one at a time,
        ;; zero for rows past N
        (block $s_done (loop $s
          (br_if $s_done (i32.ge_u (local.get $k) (local.get $kc)))
          (local.set $j (i32.const 0))
          (loop $jj
            (f32.store (i32.add (local.get $dst) (i32.shl (local.get $j) (i32.const 2)))
              (if (result f32) (i32.lt_s (local.get $j) (local.get $rows))
                (then (f32.load (i32.add (local.get $src) (i32.mul (local.get $j) (local.get $ldw)))))
                (else (f32.const 0))))
            (br_if $jj (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (i32.const 4))))
          (local.set $src (i32.add (local.get $src) (i32.const 4)))
          (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $s)))
        (local.set $r (i32.add (local.get $r) (i32.const 4)))
        (br $rowgroups)))
      (local.set $k0 (i32.add (local.get $k0) (local.get $kc)))
      (br $chunks)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; pack_w's layout for w[N, K] given transposed: w[j, k] at src + k·$lds + 4·j (e.g. one
  ;; head's values in a [positions, kvDim] activation, packed as the weight of the
  ;; probabilities · values product without transposing them first). Same bytes as pack_w.
  (func $pack_wt (export "pack_wt") (param $src i32) (param $lds i32) (param $N i32) (param $K i32)
                 (param $kc_max i32) (param $wp i32)
    (local $Np i32) (local $k0 i32) (local $kc i32) (local $chunk i32)
    (local $p i32) (local $k i32) (local $j i32) (local $cols i32) (local $s i32) (local $dst i32)
    (local.set $Np (i32.and (i32.add (local.get $N) (i32.const 7)) (i32.const -8)))
    (local.set $k0 (i32.const 0))
    (block $chunks_done (loop $chunks
      (br_if $chunks_done (i32.ge_u (local.get $k0) (local.get $K)))
      (local.set $kc (select (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0))
                             (i32.lt_u (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0)))))
      (local.set $chunk (i32.add (local.get $wp)
                                 (i32.shl (i32.mul (local.get $k0) (local.get $Np)) (i32.const 2))))
      (local.set $p (i32.const 0))
      (block $panels_done (loop $panels
        (br_if $panels_done (i32.ge_u (i32.shl (local.get $p) (i32.const 3)) (local.get $Np)))
        (local.set $cols (i32.sub (local.get $N) (i32.shl (local.get $p) (i32.const 3))))
        (local.set $dst (i32.add (local.get $chunk) (i32.mul (local.get $p) (i32.shl (local.get $kc) (i32.const 5)))))
        (local.set $s (i32.add (local.get $src)
          (i32.add (i32.mul (local.get $k0) (local.get $lds)) (i32.shl (local.get $p) (i32.const 5)))))
        (local.set $k (i32.const 0))
        (block $k_done (loop $kl
          (br_if $k_done (i32.ge_u (local.get $k) (local.get $kc)))
          (if (i32.ge_s (local.get $cols) (i32.const 8))
            (then
              (v128.store offset=0 (local.get $dst) (v128.load offset=0 (local.get $s)))
              (v128.store offset=16 (local.get $dst) (v128.load offset=16 (local.get $s))))
            (else
              ;; the ragged panel: zero past column N
              (local.set $j (i32.const 0))
              (loop $jj
                (f32.store (i32.add (local.get $dst) (i32.shl (local.get $j) (i32.const 2)))
                  (if (result f32) (i32.lt_s (local.get $j) (local.get $cols))
                    (then (f32.load (i32.add (local.get $s) (i32.shl (local.get $j) (i32.const 2)))))
                    (else (f32.const 0))))
                (br_if $jj (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (i32.const 8))))))
          (local.set $s (i32.add (local.get $s) (local.get $lds)))
          (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $kl)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $panels)))
      (local.set $k0 (i32.add (local.get $k0) (local.get $kc)))
      (br $chunks)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; y[r0..r1, :] (+)= x[r0..r1, :] · wᵀ with w packed by pack_w (same kc_max).
  ;; r0 and r1 are multiples of 4 and x, y have rows up to r1 (the caller pads x with
  ;; zero rows). The ragged last panel (N mod 8 columns) goes through the 4×8 scratch
  ;; tile at $scratch (128 bytes), so y itself is never written past column N.
  ;; Within a K-chunk the panels are taken in blocks of $NB (NB·kc·32 bytes, 256 KiB at
  ;; kc = 256, stay in L2) and every row tile runs over one block before the next: the
  ;; panels are read from L2, not from L3 or memory, once per row tile. The loop order
  ;; changes no sum: each tile of y is the same kernel calls on the same chunks.
  (func $matmul_t (export "matmul_t") (param $x i32) (param $wp i32) (param $y i32)
                  (param $r0 i32) (param $r1 i32) (param $K i32) (param $N i32)
                  (param $kc_max i32) (param $beta i32) (param $scratch i32)
    (local $Np i32) (local $np i32) (local $nr i32) (local $ldx i32) (local $ldy i32)
    (local $k0 i32) (local $kc i32) (local $chunk i32) (local $b i32)
    (local $i i32) (local $p i32) (local $xrow i32) (local $yrow i32) (local $panel i32)
    (local $r i32) (local $j i32) (local $ytail i32)
    (local $p0 i32) (local $p1 i32) (local $npt i32) (local $NB i32)
    (local.set $np (i32.shr_u (local.get $N) (i32.const 3)))
    (local.set $nr (i32.and (local.get $N) (i32.const 7)))
    (local.set $npt (i32.add (local.get $np) (i32.ne (local.get $nr) (i32.const 0))))
    (local.set $Np (i32.and (i32.add (local.get $N) (i32.const 7)) (i32.const -8)))
    (local.set $ldx (i32.shl (local.get $K) (i32.const 2)))
    (local.set $ldy (i32.shl (local.get $N) (i32.const 2)))
    (local.set $k0 (i32.const 0))
    (block $chunks_done (loop $chunks
      (br_if $chunks_done (i32.ge_u (local.get $k0) (local.get $K)))
      (local.set $kc (select (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0))
                             (i32.lt_u (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0)))))
      (local.set $chunk (i32.add (local.get $wp)
                                 (i32.shl (i32.mul (local.get $k0) (local.get $Np)) (i32.const 2))))
      (local.set $b (select (local.get $beta) (i32.const 1) (i32.eqz (local.get $k0))))
      ;; panels per block: 256 KiB of them, at least one
      (local.set $NB (i32.div_u (i32.const 262144) (i32.shl (local.get $kc) (i32.const 5))))
      (if (i32.eqz (local.get $NB)) (then (local.set $NB (i32.const 1))))
      (local.set $p0 (i32.const 0))
      (block $blocks_done (loop $blocks
        (br_if $blocks_done (i32.ge_u (local.get $p0) (local.get $npt)))
        (local.set $p1 (i32.add (local.get $p0) (local.get $NB)))
        (if (i32.gt_u (local.get $p1) (local.get $npt)) (then (local.set $p1 (local.get $npt))))
        (local.set $i (local.get $r0))
        (block $rows_done (loop $rows
          (br_if $rows_done (i32.ge_u (local.get $i) (local.get $r1)))
          (local.set $xrow (i32.add (local.get $x)
            (i32.add (i32.mul (local.get $i) (local.get $ldx)) (i32.shl (local.get $k0) (i32.const 2)))))
          (local.set $yrow (i32.add (local.get $y) (i32.mul (local.get $i) (local.get $ldy))))
          (local.set $panel (i32.add (local.get $chunk) (i32.mul (local.get $p0) (i32.shl (local.get $kc) (i32.const 5)))))
          (local.set $p (local.get $p0))
          (block $panels_done (loop $panels
            (br_if $panels_done (i32.ge_u (local.get $p) (select (local.get $p1) (local.get $np) (i32.lt_u (local.get $p1) (local.get $np)))))
            (call $kernel_4x8 (local.get $xrow) (local.get $ldx) (local.get $panel) (local.get $kc)
                              (i32.add (local.get $yrow) (i32.shl (local.get $p) (i32.const 5)))
                              (local.get $ldy) (local.get $b))
            (local.set $panel (i32.add (local.get $panel) (i32.shl (local.get $kc) (i32.const 5))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $panels)))
          ;; the ragged panel, when it is in this block ($panel points at it)
          (if (i32.and (i32.ne (local.get $nr) (i32.const 0)) (i32.eq (local.get $p1) (local.get $npt))) (then
            (local.set $ytail (i32.add (local.get $yrow) (i32.shl (local.get $np) (i32.const 5))))
            (if (local.get $b) (then
              ;; bring the existing y values of the ragged columns into the scratch tile
              (local.set $r (i32.const 0))
              (loop $lr
                (local.set $j (i32.const 0))
                (loop $lj
                  (f32.store (i32.add (local.get $scratch) (i32.shl (i32.add (i32.shl (local.get $r) (i32.const 3)) (local.get $j)) (i32.const 2)))
                    (f32.load (i32.add (local.get $ytail) (i32.add (i32.mul (local.get $r) (local.get $ldy)) (i32.shl (local.get $j) (i32.const 2))))))
                  (br_if $lj (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (local.get $nr))))
                (br_if $lr (i32.lt_u (local.tee $r (i32.add (local.get $r) (i32.const 1))) (i32.const 4))))))
            (call $kernel_4x8 (local.get $xrow) (local.get $ldx) (local.get $panel) (local.get $kc)
                              (local.get $scratch) (i32.const 32) (local.get $b))
            (local.set $r (i32.const 0))
            (loop $sr
              (local.set $j (i32.const 0))
              (loop $sj
                (f32.store (i32.add (local.get $ytail) (i32.add (i32.mul (local.get $r) (local.get $ldy)) (i32.shl (local.get $j) (i32.const 2))))
                  (f32.load (i32.add (local.get $scratch) (i32.shl (i32.add (i32.shl (local.get $r) (i32.const 3)) (local.get $j)) (i32.const 2)))))
                (br_if $sj (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (local.get $nr))))
              (br_if $sr (i32.lt_u (local.tee $r (i32.add (local.get $r) (i32.const 1))) (i32.const 4))))))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $rows)))
        (local.set $p0 (local.get $p1))
        (br $blocks)))
      (local.set $k0 (i32.add (local.get $k0) (local.get $kc)))
      (br $chunks)))
  )

;; ---------------------------------------------------------------------------------
  ;; matmul_t's product for at most 8 rows of x, on w's plain rows: with few rows, packing
  ;; w would cost more than the product (a decode step on weights not kept packed).
  ;; $xt is x transposed, 8 floats per k (x[0..8, k], rows past n zero), so the lanes are
  ;; rows of x and each w[j, k] is broadcast; the output is transposed too, yt[j, 0..8].
  ;; Per y entry the arithmetic is matmul_t's: the same chunks of $kc_max columns, within
  ;; a chunk one multiply-add chain from 0 in k order, the chunk's sum written (the first
  ;; chunk, without $beta) or added to y; so every row gets the bits matmul_t gives it.
  ;; Columns [$j0, $j1) of w (rows $ldw bytes apart), four at a time, then one at a time.
  (func $matmul_xt (export "matmul_xt") (param $xt i32) (param $w i32) (param $ldw i32) (param $yt i32)
                   (param $K i32) (param $kc_max i32) (param $beta i32) (param $j0 i32) (param $j1 i32)
    (local $j i32) (local $k0 i32) (local $kc i32) (local $b i32) (local $wj i32)
    (local.set $j (local.get $j0))
    (block $cols_done (loop $cols
      (br_if $cols_done (i32.ge_u (local.get $j) (local.get $j1)))
      (local.set $wj (i32.add (local.get $w) (i32.mul (local.get $j) (local.get $ldw))))
      (local.set $k0 (i32.const 0))
      (block $chunks_done (loop $chunks
        (br_if $chunks_done (i32.ge_u (local.get $k0) (local.get $K)))
        (local.set $kc (select (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0))
                               (i32.lt_u (local.get $kc_max) (i32.sub (local.get $K) (local.get $k0)))))
        (local.set $b (select (local.get $beta) (i32.const 1) (i32.eqz (local.get $k0))))
        (if (i32.le_u (i32.add (local.get $j) (i32.const 4)) (local.get $j1))
          (then (call $xt_4 (i32.add (local.get $xt) (i32.shl (local.get $k0) (i32.const 5)))
                            (i32.add (local.get $wj) (i32.shl (local.get $k0) (i32.const 2))) (local.get $ldw)
                            (local.get $kc) (i32.add (local.get $yt) (i32.shl (local.get $j) (i32.const 5))) (local.get $b)))
          (else (call $xt_1 (i32.add (local.get $xt) (i32.shl (local.get $k0) (i32.const 5)))
                            (i32.add (local.get $wj) (i32.shl (local.get $k0) (i32.const 2)))
                            (local.get $kc) (i32.add (local.get $yt) (i32.shl (local.get $j) (i32.const 5))) (local.get $b))))
        (local.set $k0 (i32.add (local.get $k0) (local.get $kc)))
        (br $chunks)))
      (local.set $j (i32.add (local.get $j) (select (i32.const 4) (i32.const 1)
                                                  (i32.le_u (i32.add (local.get $j) (i32.const 4)) (local.get $j1)))))
      (br $cols)))
  )

  ;; One chunk of $kc columns of matmul_xt for 4 columns of w (from $w0, rows $ldw bytes
  ;; apart): 8 accumulators (4 columns × 2 halves of the 8 rows).
  (func $xt_4 (param $xt i32) (param $w0 i32) (param $ldw i32) (param $kc i32) (param $yt i32) (param $b i32)
    (local $w1 i32) (local $w2 i32) (local $w3 i32)
    (local $x0 v128) (local $x1 v128) (local $s v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $w1 (i32.add (local.get $w0) (local.get $ldw)))
    (local.set $w2 (i32.add (local.get $w1) (local.get $ldw)))
    (local.set $w3 (i32.add (local.get $w2) (local.get $ldw)))
    (if (local.get $kc) (then
      (loop $k
        (local.set $x0 (v128.load offset=0 (local.get $xt)))
        (local.set $x1 (v128.load offset=16 (local.get $xt)))
        (local.set $s (v128.load32_splat (local.get $w0)))
        (local.set $c00 (f32x4.relaxed_madd (local.get $x0) (local.get $s) (local.get $c00)))
        (local.set $c01 (f32x4.relaxed_madd (local.get $x1) (local.get $s) (local.get $c01)))
        (local.set $s (v128.load32_splat (local.get $w1)))
        (local.set $c10 (f32x4.relaxed_madd (local.get $x0) (local.get $s) (local.get $c10)))
        (local.set $c11 (f32x4.relaxed_madd (local.get $x1) (local.get $s) (local.get $c11)))
        (local.set $s (v128.load32_splat (local.get $w2)))
        (local.set $c20 (f32x4.relaxed_madd (local.get $x0) (local.get $s) (local.get $c20)))
        (local.set $c21 (f32x4.relaxed_madd (local.get $x1) (local.get $s) (local.get $c21)))
        (local.set $s (v128.load32_splat (local.get $w3)))
        (local.set $c30 (f32x4.relaxed_madd (local.get $x0) (local.get $s) (local.get $c30)))
        (local.set $c31 (f32x4.relaxed_madd (local.get $x1) (local.get $s) (local.get $c31)))
        (local.set $xt (i32.add (local.get $xt) (i32.const 32)))
        (local.set $w0 (i32.add (local.get $w0) (i32.const 4)))
        (local.set $w1 (i32.add (local.get $w1) (i32.const 4)))
        (local.set $w2 (i32.add (local.get $w2) (i32.const 4)))
        (local.set $w3 (i32.add (local.get $w3) (i32.const 4)))
        (br_if $k (local.tee $kc (i32.sub (local.get $kc) (i32.const 1)))))))
    (if (local.get $b) (then
      (local.set $c00 (f32x4.add (local.get $c00) (v128.load offset=0 (local.get $yt))))
      (local.set $c01 (f32x4.add (local.get $c01) (v128.load offset=16 (local.get $yt))))
      (local.set $c10 (f32x4.add (local.get $c10) (v128.load offset=32 (local.get $yt))))
      (local.set $c11 (f32x4.add (local.get $c11) (v128.load offset=48 (local.get $yt))))
      (local.set $c20 (f32x4.add (local.get $c20) (v128.load offset=64 (local.get $yt))))
      (local.set $c21 (f32x4.add (local.get $c21) (v128.load offset=80 (local.get $yt))))
      (local.set $c30 (f32x4.add (local.get $c30) (v128.load offset=96 (local.get $yt))))
      (local.set $c31 (f32x4.add (local.get $c31) (v128.load offset=112 (local.get $yt))))))
    (v128.store offset=0 (local.get $yt) (local.get $c00))
    (v128.store offset=16 (local.get $yt) (local.get $c01))
    (v128.store offset=32 (local.get $yt) (local.get $c10))
    (v128.store offset=48 (local.get $yt) (local.get $c11))
    (v128.store offset=64 (local.get $yt) (local.get $c20))
    (v128.store offset=80 (local.get $yt) (local.get $c21))
    (v128.store offset=96 (local.get $yt) (local.get $c30))
    (v128.store offset=112 (local.get $yt) (local.get $c31)))

  ;; One chunk of matmul_xt for one column of w.
  (func $xt_1 (param $xt i32) (param $w0 i32) (param $kc i32) (param $yt i32) (param $b i32)
    (local $s v128) (local $c0 v128) (local $c1 v128)
    (if (local.get $kc) (then
      (loop $k
        (local.set $s (v128.load32_splat (local.get $w0)))
        (local.set $c0 (f32x4.relaxed_madd (v128.load offset=0 (local.get $xt)) (local.get $s) (local.get $c0)))
        (local.set $c1 (f32x4.relaxed_madd (v128.load offset=16 (local.get $xt)) (local.get $s) (local.get $c1)))
        (local.set $xt (i32.add (local.get $xt) (i32.const 32)))
        (local.set $w0 (i32.add (local.get $w0) (i32.const 4)))
        (br_if $k (local.tee $kc (i32.sub (local.get $kc) (i32.const 1)))))))
    (if (local.get $b) (then
      (local.set $c0 (f32x4.add (local.get $c0) (v128.load offset=0 (local.get $yt))))
      (local.set $c1 (f32x4.add (local.get $c1) (v128.load offset=16 (local.get $yt))))))
    (v128.store offset=0 (local.get $yt) (local.get $c0))
    (v128.store offset=16 (local.get $yt) (local.get $c1)))

    ;; ---------------------------------------------------------------------------------
  ;; Horizontal sum of an f32x4, in the order (l0 + l1) + (l2 + l3).
  (func $hsum (param $v v128) (result f32)
    (f32.add (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
             (f32.add (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

  ;; y[r, j] (+)= Σ_k x[r, k]·w[j, k] for few rows (decode steps): a dot product per
  ;; output, straight from the unpacked w (packing would cost as much as the product);
  ;; rows of w are $ldw bytes apart (≥ 4·K), rows of x 4·K. Four rows of w at a time
  ;; share each load of x.
  (func $dot_t (export "dot_t") (param $x i32) (param $w i32) (param $ldw i32) (param $y i32)
               (param $n i32) (param $K i32) (param $N i32) (param $beta i32)
    (local $r i32) (local $j i32) (local $k i32) (local $K4 i32) (local $ldx i32)
    (local $xr i32) (local $w0 i32) (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $yp i32)
    (local $xv v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $s0 f32) (local $s1 f32) (local $s2 f32) (local $s3 f32) (local $xs f32)
    (local.set $K4 (i32.and (local.get $K) (i32.const -4)))
    (local.set $ldx (i32.shl (local.get $K) (i32.const 2)))
    (local.set $r (i32.const 0))
    (block $rows_done (loop $rows
      (br_if $rows_done (i32.ge_u (local.get $r) (local.get $n)))
      (local.set $xr (i32.add (local.get $x) (i32.mul (local.get $r) (local.get $ldx))))
      (local.set $j (i32.const 0))
      (block $quads_done (loop $quads
        (br_if $quads_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N)))
        (local.set $w0 (i32.add (local.get $w) (i32.mul (local.get $j) (local.get $ldw))))
        (local.set $w1 (i32.add (local.get $w0) (local.get $ldw)))
        (local.set $w2 (i32.add (local.get $w1) (local.get $ldw)))
        (local.set $w3 (i32.add (local.get $w2) (local.get $ldw)))
        (local.set $a0 (v128.const i32x4 0 0 0 0))
        (local.set $a1 (v128.const i32x4 0 0 0 0))
        (local.set $a2 (v128.const i32x4 0 0 0 0))
        (local.set $a3 (v128.const i32x4 0 0 0 0))
        (local.set $k (i32.const 0))
        (block $v_done (loop $v
          (br_if $v_done (i32.ge_u (local.get $k) (local.get $K4)))
          (local.set $xv (v128.load (i32.add (local.get $xr) (i32.shl (local.get $k) (i32.const 2)))))
          (local.set $a0 (f32x4.relaxed_madd (local.get $xv) (v128.load (i32.add (local.get $w0) (i32.shl (local.get $k) (i32.const 2)))) (local.get $a0)))
          (local.set $a1 (f32x4.relaxed_madd (local.get $xv) (v128.load (i32.add (local.get $w1) (i32.shl (local.get $k) (i32.const 2)))) (local.get $a1)))
          (local.set $a2 (f32x4.relaxed_madd (local.get $xv) (v128.load (i32.add (local.get $w2) (i32.shl (local.get $k) (i32.const 2)))) (local.get $a2)))
          (local.set $a3 (f32x4.relaxed_madd (local.get $xv) (v128.load (i32.add (local.get $w3) (i32.shl (local.get $k) (i32.const 2)))) (local.get $a3)))
          (local.set $k (i32.add (local.get $k) (i32.const 4)))
          (br $v)))
        (local.set $s0 (call $hsum (local.get $a0)))
        (local.set $s1 (call $hsum (local.get $a1)))
        (local.set $s2 (call $hsum (local.get $a2)))
        (local.set $s3 (call $hsum (local.get $a3)))
        (block $t_done (loop $t
          (br_if $t_done (i32.ge_u (local.get $k) (local.get $K)))
          (local.set $xs (f32.load (i32.add (local.get $xr) (i32.shl (local.get $k) (i32.const 2)))))
          (local.set $s0 (f32.add (local.get $s0) (f32.mul (local.get $xs) (f32.load (i32.add (local.get $w0) (i32.shl (local.get $k) (i32.const 2)))))))
          (local.set $s1 (f32.add (local.get $s1) (f32.mul (local.get $xs) (f32.load (i32.add (local.get $w1) (i32.shl (local.get $k) (i32.const 2)))))))
          (local.set $s2 (f32.add (local.get $s2) (f32.mul (local.get $xs) (f32.load (i32.add (local.get $w2) (i32.shl (local.get $k) (i32.const 2)))))))
          (local.set $s3 (f32.add (local.get $s3) (f32.mul (local.get $xs) (f32.load (i32.add (local.get $w3) (i32.shl (local.get $k) (i32.const 2)))))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $t)))
        (local.set $yp (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $N)) (local.get $j)) (i32.const 2))))
        (if (local.get $beta) (then
          (local.set $s0 (f32.add (local.get $s0) (f32.load offset=0 (local.get $yp))))
          (local.set $s1 (f32.add (local.get $s1) (f32.load offset=4 (local.get $yp))))
          (local.set $s2 (f32.add (local.get $s2) (f32.load offset=8 (local.get $yp))))
          (local.set $s3 (f32.add (local.get $s3) (f32.load offset=12 (local.get $yp))))))
        (f32.store offset=0 (local.get $yp) (local.get $s0))
        (f32.store offset=4 (local.get $yp) (local.get $s1))
        (f32.store offset=8 (local.get $yp) (local.get $s2))
        (f32.store offset=12 (local.get $yp) (local.get $s3))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $quads)))
      ;; remaining outputs one at a time
      (block $ones_done (loop $ones
        (br_if $ones_done (i32.ge_u (local.get $j) (local.get $N)))
        (local.set $w0 (i32.add (local.get $w) (i32.mul (local.get $j) (local.get $ldw))))
        (local.set $a0 (v128.const i32x4 0 0 0 0))
        (local.set $k (i32.const 0))
        (block $v1_done (loop $v1
          (br_if $v1_done (i32.ge_u (local.get $k) (local.get $K4)))
          (local.set $a0 (f32x4.relaxed_madd
            (v128.load (i32.add (local.get $xr) (i32.shl (local.get $k) (i32.const 2))))
            (v128.load (i32.add (local.get $w0) (i32.shl (local.get $k) (i32.const 2))))
            (local.get $a0)))
          (local.set $k (i32.add (local.get $k) (i32.const 4)))
          (br $v1)))
        (local.set $s0 (call $hsum (local.get $a0)))
        (block $t1_done (loop $t1
          (br_if $t1_done (i32.ge_u (local.get $k) (local.get $K)))
          (local.set $s0 (f32.add (local.get $s0)
            (f32.mul (f32.load (i32.add (local.get $xr) (i32.shl (local.get $k) (i32.const 2))))
                     (f32.load (i32.add (local.get $w0) (i32.shl (local.get $k) (i32.const 2)))))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $t1)))
        (local.set $yp (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $N)) (local.get $j)) (i32.const 2))))
        (if (local.get $beta) (then
          (local.set $s0 (f32.add (local.get $s0) (f32.load (local.get $yp))))))
        (f32.store (local.get $yp) (local.get $s0))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $ones)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; Group fake-quantization, numerically identical to core/quant/rtn.ts's
  ;; fakeQuantRtnRect: per group, [lo, hi] = [min(0, min w), max(0, max w)], then
  ;;   scale = f32((hi − lo) / maxq)      (1 with zero 0 when that is not > 0)
  ;;   zero  = clamp(round(−lo / scale), 0, maxq)
  ;;   out   = f32((clamp(round(w / scale) + zero, 0, maxq) − zero) · scale)
  ;; all in float64 like the JavaScript, with round = Math.round (halves toward +∞) done
  ;; as floor(v) + (v − floor(v) ≥ 0.5); that difference is exact in float64, so this is
  ;; Math.round for every finite v. Min/max use pmin/pmax, which are JavaScript's
  ;; `x < lo ? x : lo`, so even ±0 and NaN behave the same.
  ;; Clip search (when $nratios > 0): for each ratio r ≠ 1 (float64 at $ratios), the grid
  ;; of [r·lo, r·hi] replaces the current one if its squared error over the group is
  ;; strictly smaller; errors are summed element by element in order, as core does, so
  ;; the comparisons come out the same.
  ;; With $f16 ≠ 0 every scale is rounded to fp16 first (min(f16(scale), 65504), core's
  ;; f16Scales). With $codes ≠ 0, a byte per group ([rows, g1 − g0] at $codes): 255 leaves
  ;; the group to the above, code k fixes its range to [r·lo, r·hi] with r the float64 at
  ;; $code_ratios + 8k (core's clip codes), no search.
  ;; Rows of w and out are $cols floats long; groups [$g0, $g1) of each of $rows rows.
  (func $qdq (export "qdq") (param $w i32) (param $out i32) (param $rows i32) (param $cols i32)
             (param $group i32) (param $g0 i32) (param $g1 i32) (param $maxq f64)
             (param $ratios i32) (param $nratios i32) (param $f16 i32) (param $codes i32) (param $code_ratios i32)
    (local $r i32) (local $g i32) (local $c0 i32) (local $len i32) (local $off i32) (local $code i32)
    (local.set $r (i32.const 0))
    (block $rows_done (loop $rowsl
      (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $g (local.get $g0))
      (block $groups_done (loop $groups
        (br_if $groups_done (i32.ge_u (local.get $g) (local.get $g1)))
        (local.set $c0 (i32.mul (local.get $g) (local.get $group)))
        (local.set $len (i32.sub (local.get $cols) (local.get $c0)))
        (if (i32.gt_u (local.get $len) (local.get $group)) (then (local.set $len (local.get $group))))
        (local.set $off (i32.shl (i32.add (i32.mul (local.get $r) (local.get $cols)) (local.get $c0)) (i32.const 2)))
        (local.set $code (i32.const 255))
        (if (local.get $codes) (then
          (local.set $code (i32.load8_u (i32.add (local.get $codes)
            (i32.add (i32.mul (local.get $r) (i32.sub (local.get $g1) (local.get $g0))) (i32.sub (local.get $g) (local.get $g0))))))))
        (call $qdq_group (i32.add (local.get $w) (local.get $off)) (i32.add (local.get $out) (local.get $off))
                         (local.get $len) (local.get $maxq) (local.get $ratios) (local.get $nratios)
                         (local.get $f16) (local.get $code) (local.get $code_ratios))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $groups)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rowsl)))
  )

  ;; Math.round(v) for finite v (see above).
  (func $round_half_up (param $v f64) (result f64)
    (local $f f64)
    (local.set $f (f64.floor (local.get $v)))
    (select (f64.add (local.get $f) (f64.const 1)) (local.get $f)
            (f64.ge (f64.sub (local.get $v) (local.get $f)) (f64.const 0.5))))

  ;; s ≥ 0 rounded to the nearest fp16 value, ties to even (core's f16Round): the fp16
  ;; step at s's exponent (2^-24 for fp16 subnormals) times nearest(s / step), all exact in
  ;; float64; at or past 65520 this gives 65536 or more where core gives Infinity, which
  ;; the caller's min(·, 65504) makes the same.
  (func $f16_round (param $s f64) (result f64)
    (local $e i32) (local $step f64)
    (local.set $e (i32.sub (i32.and (i32.wrap_i64 (i64.shr_u (i64.reinterpret_f64 (local.get $s)) (i64.const 52))) (i32.const 0x7ff))
                           (i32.const 1023)))
    (if (i32.lt_s (local.get $e) (i32.const -14)) (then (local.set $e (i32.const -14))))
    (local.set $step (f64.reinterpret_i64 (i64.shl (i64.extend_i32_s (i32.add (local.get $e) (i32.const 1013))) (i64.const 52))))
    (f64.mul (f64.nearest (f64.div (local.get $s) (local.get $step))) (local.get $step)))

  ;; Grid (scale, zero) of the range [lo, hi], lo ≤ 0 ≤ hi (core's rangeParams).
  (func $grid (param $lo f64) (param $hi f64) (param $maxq f64) (param $f16 i32) (result f64 f64)
    (local $s f64) (local $z f64)
    (local.set $s (f64.promote_f32 (f32.demote_f64 (f64.div (f64.sub (local.get $hi) (local.get $lo)) (local.get $maxq)))))
    (if (local.get $f16) (then (local.set $s (f64.min (call $f16_round (local.get $s)) (f64.const 65504)))))
    (if (i32.eqz (f64.gt (local.get $s) (f64.const 0))) (then (return (f64.const 1) (f64.const 0))))
    (local.set $z (call $round_half_up (f64.div (f64.neg (local.get $lo)) (local.get $s))))
    (if (f64.lt (local.get $z) (f64.const 0)) (then (local.set $z (f64.const 0))))
    (if (f64.gt (local.get $z) (local.get $maxq)) (then (local.set $z (local.get $maxq))))
    (local.get $s) (local.get $z))

  ;; Two lanes of (clamp(round(v / S) + Z, 0, M) − Z) · S, in float64 (not yet rounded to f32).
  (func $deq2 (param $v v128) (param $S v128) (param $Z v128) (param $M v128) (result v128)
    (local $f v128)
    (local.set $v (f64x2.div (local.get $v) (local.get $S)))
    (local.set $f (f64x2.floor (local.get $v)))
    (local.set $v (f64x2.add (local.get $f)
      (v128.and (f64x2.ge (f64x2.sub (local.get $v) (local.get $f)) (f64x2.splat (f64.const 0.5)))
                (f64x2.splat (f64.const 1)))))
    (local.set $v (f64x2.pmin (f64x2.pmax (f64x2.add (local.get $v) (local.get $Z)) (f64x2.splat (f64.const 0))) (local.get $M)))
    (f64x2.mul (f64x2.sub (local.get $v) (local.get $Z)) (local.get $S)))

  ;; One element: f32((clamp(round(x / s) + z, 0, maxq) − z) · s).
  (func $deq1 (param $x f64) (param $s f64) (param $z f64) (param $maxq f64) (result f32)
    (local $q f64)
    (local.set $q (f64.add (call $round_half_up (f64.div (local.get $x) (local.get $s))) (local.get $z)))
    (if (f64.lt (local.get $q) (f64.const 0)) (then (local.set $q (f64.const 0))))
    (if (f64.gt (local.get $q) (local.get $maxq)) (then (local.set $q (local.get $maxq))))
    (f32.demote_f64 (f64.mul (f64.sub (local.get $q) (local.get $z)) (local.get $s))))

;; Clip search of one group (core's groupParams): starting from the min–max grid (s, z),
  ;; try the ratios ≠ 1 in order and keep a grid only when its squared error is strictly
  ;; below the best so far. Each error is summed element by element in order, as core
  ;; does, so every comparison comes out the same. Two ratios share a pass over the
  ;; group, one per f64x2 lane: the two sums are independent chains, which hides the
  ;; latency of the in-order additions.
  (func $clip_search (param $src i32) (param $len i32) (param $lo f32) (param $hi f32) (param $maxq f64)
                     (param $ratios i32) (param $nratios i32) (param $s f64) (param $z f64) (param $f16 i32) (result f64 f64)
    (local $best f64) (local $i i32) (local $k i32) (local $n i32) (local $ra f64) (local $rb f64)
    (local $sa f64) (local $za f64) (local $sb f64) (local $zb f64) (local $e v128)
    (local $S v128) (local $Z v128) (local $M v128) (local $x v128) (local $v v128) (local $f v128)
    (local $HALF v128) (local $ONE v128) (local $ZERO v128)
    (local.set $M (f64x2.splat (local.get $maxq)))
    (local.set $HALF (f64x2.splat (f64.const 0.5)))
    (local.set $ONE (f64x2.splat (f64.const 1)))
    ;; the min–max grid's own error: both lanes the same grid
    (local.set $S (f64x2.splat (local.get $s)))
    (local.set $Z (f64x2.splat (local.get $z)))
    (local.set $n (i32.const -1))
    (block $pairs_done (loop $pairs
      ;; the lanes' squared errors over the group, in element order
      (local.set $e (local.get $ZERO))
      (local.set $i (i32.const 0))
      (block $el_done (loop $el
        (br_if $el_done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $x (f64x2.splat (f64.promote_f32 (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))))
        (local.set $v (f64x2.div (local.get $x) (local.get $S)))
        (local.set $f (f64x2.floor (local.get $v)))
        (local.set $v (f64x2.add (local.get $f)
          (v128.and (f64x2.ge (f64x2.sub (local.get $v) (local.get $f)) (local.get $HALF)) (local.get $ONE))))
        (local.set $v (f64x2.pmin (f64x2.pmax (f64x2.add (local.get $v) (local.get $Z)) (local.get $ZERO)) (local.get $M)))
        (local.set $v (f64x2.sub (f64x2.promote_low_f32x4 (f32x4.demote_f64x2_zero
          (f64x2.mul (f64x2.sub (local.get $v) (local.get $Z)) (local.get $S)))) (local.get $x)))
        (local.set $e (f64x2.add (local.get $e) (f64x2.mul (local.get $v) (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $el)))
      ;; compare in ratio order: lane 0, then lane 1 (when it holds a second ratio)
      (if (i32.lt_s (local.get $n) (i32.const 0))
        (then (local.set $best (f64x2.extract_lane 0 (local.get $e))))
        (else
          (if (f64.lt (f64x2.extract_lane 0 (local.get $e)) (local.get $best)) (then
            (local.set $best (f64x2.extract_lane 0 (local.get $e)))
            (local.set $s (local.get $sa))
            (local.set $z (local.get $za))))
          (if (i32.eq (local.get $n) (i32.const 2)) (then
            (if (f64.lt (f64x2.extract_lane 1 (local.get $e)) (local.get $best)) (then
              (local.set $best (f64x2.extract_lane 1 (local.get $e)))
              (local.set $s (local.get $sb))
              (local.set $z (local.get $zb))))))))
      ;; the next one or two ratios ≠ 1
      (local.set $n (i32.const 0))
      (block $got (loop $next
        (br_if $got (i32.ge_u (local.get $k) (local.get $nratios)))
        (local.set $rb (f64.load (i32.add (local.get $ratios) (i32.shl (local.get $k) (i32.const 3)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (if (f64.ne (local.get $rb) (f64.const 1)) (then
          (if (i32.eqz (local.get $n)) (then (local.set $ra (local.get $rb))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if $got (i32.eq (local.get $n) (i32.const 2)))))
        (br $next)))
      (br_if $pairs_done (i32.eqz (local.get $n)))
      (if (i32.eq (local.get $n) (i32.const 1)) (then (local.set $rb (local.get $ra))))
      (call $grid (f64.mul (local.get $ra) (f64.promote_f32 (local.get $lo)))
                  (f64.mul (local.get $ra) (f64.promote_f32 (local.get $hi))) (local.get $maxq) (local.get $f16))
      (local.set $za)
      (local.set $sa)
      (call $grid (f64.mul (local.get $rb) (f64.promote_f32 (local.get $lo)))
                  (f64.mul (local.get $rb) (f64.promote_f32 (local.get $hi))) (local.get $maxq) (local.get $f16))
      (local.set $zb)
      (local.set $sb)
      (local.set $S (f64x2.replace_lane 1 (f64x2.splat (local.get $sa)) (local.get $sb)))
      (local.set $Z (f64x2.replace_lane 1 (f64x2.splat (local.get $za)) (local.get $zb)))
      (br $pairs)))
    (local.get $s) (local.get $z))

  ;; One group of $len floats at $src into $dst.
  (func $qdq_group (param $src i32) (param $dst i32) (param $len i32) (param $maxq f64)
                   (param $ratios i32) (param $nratios i32) (param $f16 i32) (param $code i32) (param $code_ratios i32)
    (local $i i32) (local $x f32) (local $lo f32) (local $hi f32)
    (local $s f64) (local $z f64)
    (local $v v128) (local $vlo v128) (local $vhi v128)
    (local $S v128) (local $Z v128) (local $M v128)
    ;; range, widened to contain 0 (the accumulators start at 0)
    (block $mm_done (loop $mm
      (br_if $mm_done (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $len)))
      (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $vlo (f32x4.pmin (local.get $vlo) (local.get $v)))
      (local.set $vhi (f32x4.pmax (local.get $vhi) (local.get $v)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $mm)))
    ;; fold the four lanes (each is +0 or a value past it, never -0 or NaN, so the order
    ;; of folding cannot change the result)
    (local.set $vlo (f32x4.pmin (local.get $vlo) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vlo) (local.get $vlo))))
    (local.set $vhi (f32x4.pmax (local.get $vhi) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vhi) (local.get $vhi))))
    (local.set $vlo (f32x4.pmin (local.get $vlo) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $vlo) (local.get $vlo))))
    (local.set $vhi (f32x4.pmax (local.get $vhi) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $vhi) (local.get $vhi))))
    (local.set $lo (f32x4.extract_lane 0 (local.get $vlo)))
    (local.set $hi (f32x4.extract_lane 0 (local.get $vhi)))
    (block $mt_done (loop $mt
      (br_if $mt_done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $x (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
      (if (f32.lt (local.get $x) (local.get $lo)) (then (local.set $lo (local.get $x))))
      (if (f32.gt (local.get $x) (local.get $hi)) (then (local.set $hi (local.get $x))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $mt)))
    (if (i32.ne (local.get $code) (i32.const 255))
      (then
        ;; a clip code: its ratio's range, no search
        (local.set $s (f64.load (i32.add (local.get $code_ratios) (i32.shl (local.get $code) (i32.const 3)))))
        (call $grid (f64.mul (local.get $s) (f64.promote_f32 (local.get $lo))) (f64.mul (local.get $s) (f64.promote_f32 (local.get $hi)))
                    (local.get $maxq) (local.get $f16))
        (local.set $z)
        (local.set $s))
      (else
        (call $grid (f64.promote_f32 (local.get $lo)) (f64.promote_f32 (local.get $hi)) (local.get $maxq) (local.get $f16))
        (local.set $z)
        (local.set $s)
        (if (i32.and (i32.ne (local.get $nratios) (i32.const 0)) (f32.ne (local.get $lo) (local.get $hi))) (then
          (call $clip_search (local.get $src) (local.get $len) (local.get $lo) (local.get $hi) (local.get $maxq)
                             (local.get $ratios) (local.get $nratios) (local.get $s) (local.get $z) (local.get $f16))
          (local.set $z)
          (local.set $s)))))
    ;; codes and dequantized values, 4 at a time as two f64x2 halves
    (local.set $S (f64x2.splat (local.get $s)))
    (local.set $Z (f64x2.splat (local.get $z)))
    (local.set $M (f64x2.splat (local.get $maxq)))
    (local.set $i (i32.const 0))
    (block $q_done (loop $ql
      (br_if $q_done (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $len)))
      (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
      (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (call $deq2 (f64x2.promote_low_f32x4 (local.get $v)) (local.get $S) (local.get $Z) (local.get $M)))
          (f32x4.demote_f64x2_zero (call $deq2
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))
            (local.get $S) (local.get $Z) (local.get $M)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $ql)))
    (block $qt_done (loop $qt
      (br_if $qt_done (i32.ge_u (local.get $i) (local.get $len)))
      (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
        (call $deq1 (f64.promote_f32 (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
                    (local.get $s) (local.get $z) (local.get $maxq)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $qt)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; exp of four f32 lanes (after Cephes expf): x = n·ln2 + r, n = nearest(x·log2 e),
  ;; ln2 in two parts (0.693359375 has few bits, so n·C1 is exact) leaving |r| ≤ ln2/2;
  ;; exp(r) = 1 + r + r²·P(r) with Cephes' degree-5 P; 2^n from the exponent bits.
  ;; Within 2 float32 ulp of exp(x) for x in [−87.3, 88.3] (the conformance suite checks
  ;; it against float64); lanes below give 0, above give exp(88.3) (no infinities).
  (func $exp4 (param $x v128) (result v128)
    (local $n v128) (local $r v128) (local $p v128) (local $under v128)
    (local.set $under (f32x4.lt (local.get $x) (v128.const f32x4 -87.3 -87.3 -87.3 -87.3)))
    ;; pmax/pmin (one instruction each on x64; min/max take several) clamp as max/min do,
    ;; −0 and infinities included, with x the first operand (a NaN stays a NaN)
    (local.set $x (f32x4.pmin (f32x4.pmax (local.get $x) (v128.const f32x4 -87.3 -87.3 -87.3 -87.3))
                              (v128.const f32x4 88.3 88.3 88.3 88.3)))
    (local.set $n (f32x4.nearest (f32x4.mul (local.get $x) (v128.const f32x4 1.44269504088896341 1.44269504088896341 1.44269504088896341 1.44269504088896341))))
    (local.set $r (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $n) (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375)))
                             (f32x4.mul (local.get $n) (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))))
    (local.set $p (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1)))
    (local.set $p (f32x4.add (f32x4.add (f32x4.mul (local.get $p) (f32x4.mul (local.get $r) (local.get $r))) (local.get $r))
                             (v128.const f32x4 1 1 1 1)))
    ;; × 2^n: (n + 127) << 23 is the float 2^n for n in [−126, 127]; n + 2²³ + 127 in float32
    ;; holds n + 127 in its low mantissa bits and a zero at bit 23, so its bits shifted left
    ;; by 23 are that, without a float-to-int conversion (several instructions on x64)
    (local.set $p (f32x4.mul (local.get $p)
      (i32x4.shl (f32x4.add (local.get $n) (v128.const f32x4 8388735 8388735 8388735 8388735)) (i32.const 23))))
    (v128.andnot (local.get $p) (local.get $under)))

  ;; exp of one f32 through the same lanes (so tails match the vector body bit for bit).
  (func $exp1 (param $x f32) (result f32)
    (f32x4.extract_lane 0 (call $exp4 (f32x4.splat (local.get $x)))))

  ;; Causal softmax of the scores att [T, S] in place (S = past + T): row t sees keys
  ;; 0 … past + t; p_j = exp((a_j − max)·scale) / Σ over those keys, 0 for the others.
  ;; The sum is in float64 (two f64x2 accumulators, then the scalar tail, in order).
  (func $softmax_causal (export "softmax_causal") (param $att i32) (param $T i32) (param $S i32) (param $past i32) (param $scale f32)
    (local $t i32) (local $j i32) (local $row i32) (local $vis i32) (local $v4 i32) (local $p i32)
    (local $mv v128) (local $e v128) (local $s0 v128) (local $s1 v128) (local $M v128) (local $SC v128)
    (local $m f32) (local $es f32) (local $sum f64) (local $inv f32)
    (local.set $t (i32.const 0))
    (block $rows_done (loop $rows
      (br_if $rows_done (i32.ge_u (local.get $t) (local.get $T)))
      (local.set $row (i32.add (local.get $att) (i32.shl (i32.mul (local.get $t) (local.get $S)) (i32.const 2))))
      (local.set $vis (i32.add (i32.add (local.get $past) (local.get $t)) (i32.const 1)))
      (local.set $v4 (i32.and (local.get $vis) (i32.const -4)))
      ;; max over the visible keys
      (local.set $mv (v128.const f32x4 -inf -inf -inf -inf))
      (local.set $j (i32.const 0))
      (block $mx_done (loop $mx
        (br_if $mx_done (i32.ge_u (local.get $j) (local.get $v4)))
        (local.set $mv (f32x4.max (local.get $mv) (v128.load (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $mx)))
      (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mv)) (f32x4.extract_lane 1 (local.get $mv)))
                             (f32.max (f32x4.extract_lane 2 (local.get $mv)) (f32x4.extract_lane 3 (local.get $mv)))))
      (block $mt_done (loop $mt
        (br_if $mt_done (i32.ge_u (local.get $j) (local.get $vis)))
        (local.set $m (f32.max (local.get $m) (f32.load (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $mt)))
      ;; exponentials and their float64 sum
      (local.set $M (f32x4.splat (local.get $m)))
      (local.set $SC (f32x4.splat (local.get $scale)))
      (local.set $s0 (v128.const f64x2 0 0))
      (local.set $s1 (v128.const f64x2 0 0))
      (local.set $j (i32.const 0))
      (block $ex_done (loop $ex
        (br_if $ex_done (i32.ge_u (local.get $j) (local.get $v4)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
        (local.set $e (call $exp4 (f32x4.mul (f32x4.sub (v128.load (local.get $p)) (local.get $M)) (local.get $SC))))
        (v128.store (local.get $p) (local.get $e))
        (local.set $s0 (f64x2.add (local.get $s0) (f64x2.promote_low_f32x4 (local.get $e))))
        (local.set $s1 (f64x2.add (local.get $s1) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $e) (local.get $e)))))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $ex)))
      (local.set $s0 (f64x2.add (local.get $s0) (local.get $s1)))
      (local.set $sum (f64.add (f64x2.extract_lane 0 (local.get $s0)) (f64x2.extract_lane 1 (local.get $s0))))
      (block $et_done (loop $et
        (br_if $et_done (i32.ge_u (local.get $j) (local.get $vis)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
        (local.set $es (call $exp1 (f32.mul (f32.sub (f32.load (local.get $p)) (local.get $m)) (local.get $scale))))
        (f32.store (local.get $p) (local.get $es))
        (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (local.get $es))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $et)))
      ;; normalise, then zero the masked keys
      (local.set $inv (f32.demote_f64 (f64.div (f64.const 1) (local.get $sum))))
      (local.set $M (f32x4.splat (local.get $inv)))
      (local.set $j (i32.const 0))
      (block $nv_done (loop $nv
        (br_if $nv_done (i32.ge_u (local.get $j) (local.get $v4)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
        (v128.store (local.get $p) (f32x4.mul (v128.load (local.get $p)) (local.get $M)))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $nv)))
      (block $nt_done (loop $nt
        (br_if $nt_done (i32.ge_u (local.get $j) (local.get $vis)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
        (f32.store (local.get $p) (f32.mul (f32.load (local.get $p)) (local.get $inv)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $nt)))
      (block $z_done (loop $z
        (br_if $z_done (i32.ge_u (local.get $j) (local.get $S)))
        (f32.store (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))) (f32.const 0))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $z)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $rows)))
  )

  ;; SwiGLU's gate: a[i] ← a[i] / (1 + exp(−a[i])) · g[i] for i < n, n a multiple of 4
  ;; (the caller pads).
  (func $silu_mul (export "silu_mul") (param $a i32) (param $g i32) (param $n i32)
    (local $i i32) (local $p i32) (local $v v128)
    (local.set $i (i32.const 0))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $p (i32.add (local.get $a) (i32.shl (local.get $i) (i32.const 2))))
      (local.set $v (v128.load (local.get $p)))
      (v128.store (local.get $p)
        (f32x4.mul
          (f32x4.div (local.get $v) (f32x4.add (v128.const f32x4 1 1 1 1) (call $exp4 (f32x4.neg (local.get $v)))))
          (v128.load (i32.add (local.get $g) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l)))
  )

;; ---------------------------------------------------------------------------------
  ;; Sampling a token (core/data.ts): the float64 weights w_i = exp((l_i − max) / T) of a
  ;; logits row, their sum in order, and the first i where u·Σw − w_0 − … − w_i < 0, bit for
  ;; bit as the JS reference draws it (Math.exp included), so the sampled sets do not depend
  ;; on the backend. exp is fdlibm's e_exp.c, the algorithm V8's Math.exp runs: only IEEE
  ;; +, −, ×, ÷ and exact scalings, which wasm performs exactly as C does.

  ;; exp(x), float64, every branch of e_exp.c.
  (func $exp_f64 (export "exp_f64") (param $x f64) (result f64)
    (local $hx i32) (local $xsb i32) (local $k i32) (local $hi f64) (local $lo f64) (local $t f64) (local $c f64) (local $y f64)
    (local.set $hx (i32.wrap_i64 (i64.shr_u (i64.reinterpret_f64 (local.get $x)) (i64.const 32))))
    (local.set $xsb (i32.shr_u (local.get $hx) (i32.const 31)))
    (local.set $hx (i32.and (local.get $hx) (i32.const 0x7fffffff)))
    ;; |x| ≥ 709.78: NaN, ±inf, overflow, underflow
    (if (i32.ge_u (local.get $hx) (i32.const 0x40862E42))
      (then
        (if (i32.ge_u (local.get $hx) (i32.const 0x7ff00000))
          (then
            (if (f64.ne (local.get $x) (local.get $x)) (then (return (f64.add (local.get $x) (local.get $x)))))
            (return (select (local.get $x) (f64.const 0) (i32.eqz (local.get $xsb))))))
        (if (f64.gt (local.get $x) (f64.const 7.09782712893383973096e+02)) (then (return (f64.const inf))))
        (if (f64.lt (local.get $x) (f64.const -7.45133219101941108420e+02)) (then (return (f64.const 0))))))
    ;; argument reduction: x = k·ln2 + r, |r| ≤ ln2/2, r as hi − lo
    (if (i32.gt_u (local.get $hx) (i32.const 0x3FD62E42))
      (then
        (if (i32.lt_u (local.get $hx) (i32.const 0x3FF0A2B2))
          (then
            (if (f64.eq (local.get $x) (f64.const 1)) (then (return (f64.const 2.718281828459045))))
            (local.set $hi (f64.sub (local.get $x) (select (f64.const -6.93147180369123816490e-01) (f64.const 6.93147180369123816490e-01) (local.get $xsb))))
            (local.set $lo (select (f64.const -1.90821492927058770002e-10) (f64.const 1.90821492927058770002e-10) (local.get $xsb)))
            (local.set $k (i32.sub (i32.const 1) (i32.shl (local.get $xsb) (i32.const 1)))))
          (else
            (local.set $t (f64.trunc (f64.add (f64.mul (f64.const 1.44269504088896338700e+00) (local.get $x))
                                              (select (f64.const -0.5) (f64.const 0.5) (local.get $xsb)))))
            (local.set $k (i32.trunc_f64_s (local.get $t)))
            (local.set $hi (f64.sub (local.get $x) (f64.mul (local.get $t) (f64.const 6.93147180369123816490e-01))))
            (local.set $lo (f64.mul (local.get $t) (f64.const 1.90821492927058770002e-10)))))
        (local.set $x (f64.sub (local.get $hi) (local.get $lo))))
      (else
        ;; |x| < 2^−28: 1 + x
        (if (i32.lt_u (local.get $hx) (i32.const 0x3E300000)) (then (return (f64.add (f64.const 1) (local.get $x)))))))
    (local.set $t (f64.mul (local.get $x) (local.get $x)))
    (local.set $c (f64.sub (local.get $x) (f64.mul (local.get $t) (call $exp_poly (local.get $t)))))
    (if (i32.eqz (local.get $k))
      (then (return (f64.sub (f64.const 1) (f64.sub (f64.div (f64.mul (local.get $x) (local.get $c)) (f64.sub (local.get $c) (f64.const 2))) (local.get $x))))))
    (local.set $y (f64.sub (f64.const 1)
      (f64.sub (f64.sub (local.get $lo) (f64.div (f64.mul (local.get $x) (local.get $c)) (f64.sub (f64.const 2) (local.get $c)))) (local.get $hi))))
    ;; × 2^k, in two steps below 2^−1021
    (if (i32.ge_s (local.get $k) (i32.const -1021))
      (then
        (if (i32.eq (local.get $k) (i32.const 1024)) (then (return (f64.mul (f64.mul (local.get $y) (f64.const 2)) (f64.const 0x1p1023)))))
        (return (f64.mul (local.get $y) (f64.reinterpret_i64 (i64.shl (i64.extend_i32_s (i32.add (local.get $k) (i32.const 1023))) (i64.const 52)))))))
    (f64.mul (f64.mul (local.get $y) (f64.reinterpret_i64 (i64.shl (i64.extend_i32_s (i32.add (local.get $k) (i32.const 2023))) (i64.const 52))))
             (f64.const 0x1p-1000)))

  ;; P1 + t·(P2 + t·(P3 + t·(P4 + t·P5))), e_exp.c's polynomial
  (func $exp_poly (param $t f64) (result f64)
    (f64.add (f64.const 1.66666666666666019037e-01) (f64.mul (local.get $t)
    (f64.add (f64.const -2.77777777770155933842e-03) (f64.mul (local.get $t)
    (f64.add (f64.const 6.61375632143793436117e-05) (f64.mul (local.get $t)
    (f64.add (f64.const -1.65339022054652515390e-06) (f64.mul (local.get $t) (f64.const 4.13813679705723846039e-08))))))))))

  ;; exp_poly on both lanes
  (func $exp_poly2 (param $t v128) (result v128)
    (f64x2.add (v128.const f64x2 1.66666666666666019037e-01 1.66666666666666019037e-01) (f64x2.mul (local.get $t)
    (f64x2.add (v128.const f64x2 -2.77777777770155933842e-03 -2.77777777770155933842e-03) (f64x2.mul (local.get $t)
    (f64x2.add (v128.const f64x2 6.61375632143793436117e-05 6.61375632143793436117e-05) (f64x2.mul (local.get $t)
    (f64x2.add (v128.const f64x2 -1.65339022054652515390e-06 -1.65339022054652515390e-06)
               (f64x2.mul (local.get $t) (v128.const f64x2 4.13813679705723846039e-08 4.13813679705723846039e-08))))))))))

  ;; exp of both lanes where 1.5·ln2 ≤ |x| < 707 (e_exp.c's general branch, with k in
  ;; [−1020, 1020]: 2^k is a plain exponent); exp_pair falls back to exp_f64 per lane otherwise.
  (func $exp2_general (param $x v128) (result v128)
    (local $t v128) (local $hi v128) (local $lo v128) (local $tt v128) (local $c v128) (local $y v128)
    ;; k = trunc(x/ln2 ± 0.5), the sign of x
    (local.set $t (f64x2.trunc (f64x2.add (f64x2.mul (v128.const f64x2 1.44269504088896338700e+00 1.44269504088896338700e+00) (local.get $x))
      (v128.or (v128.and (local.get $x) (v128.const i64x2 0x8000000000000000 0x8000000000000000)) (v128.const f64x2 0.5 0.5)))))
    (local.set $hi (f64x2.sub (local.get $x) (f64x2.mul (local.get $t) (v128.const f64x2 6.93147180369123816490e-01 6.93147180369123816490e-01))))
    (local.set $lo (f64x2.mul (local.get $t) (v128.const f64x2 1.90821492927058770002e-10 1.90821492927058770002e-10)))
    (local.set $x (f64x2.sub (local.get $hi) (local.get $lo)))
    (local.set $tt (f64x2.mul (local.get $x) (local.get $x)))
    (local.set $c (f64x2.sub (local.get $x) (f64x2.mul (local.get $tt) (call $exp_poly2 (local.get $tt)))))
    (local.set $y (f64x2.sub (v128.const f64x2 1 1)
      (f64x2.sub (f64x2.sub (local.get $lo) (f64x2.div (f64x2.mul (local.get $x) (local.get $c)) (f64x2.sub (v128.const f64x2 2 2) (local.get $c))))
                 (local.get $hi))))
    ;; 2^k: k + 2^52 + 1023 (exact) holds k + 1023 in its low mantissa bits; shifted up by 52
    ;; they are 2^k's exponent field, the rest zero
    (f64x2.mul (local.get $y)
      (i64x2.shl (f64x2.add (local.get $t) (v128.const f64x2 4503599627371519 4503599627371519)) (i32.const 52))))

  (func $exp_pair (param $x v128) (result v128)
    (local $a v128)
    (local.set $a (f64x2.abs (local.get $x)))
    (if (result v128) (i64x2.all_true (v128.and (f64x2.ge (local.get $a) (v128.const f64x2 0x1.0a2b2p+0 0x1.0a2b2p+0))
                                                (f64x2.lt (local.get $a) (v128.const f64x2 707 707))))
      (then (call $exp2_general (local.get $x)))
      (else (f64x2.replace_lane 1 (f64x2.splat (call $exp_f64 (f64x2.extract_lane 0 (local.get $x))))
                                  (call $exp_f64 (f64x2.extract_lane 1 (local.get $x)))))))

  ;; One draw from the logits row $l [V] (float32): the weights into $w (float64 [V]), then
  ;; the first i where u·Σw − w_0 − … − w_i < 0 (V − 1 if none), as core/rng.ts's categoricalAt.
  (func $draw (param $l i32) (param $V i32) (param $T f64) (param $u f64) (param $w i32) (result i32)
    (local $i i32) (local $r f64)
    (local.set $r (f64.mul (local.get $u) (call $draw_weights (local.get $l) (local.get $V) (local.get $T) (local.get $w))))
    (local.set $i (i32.const 0))
    (block $found (loop $walk
      (br_if $found (i32.ge_u (local.get $i) (local.get $V)))
      (local.set $r (f64.sub (local.get $r) (f64.load (i32.add (local.get $w) (i32.shl (local.get $i) (i32.const 3))))))
      (if (f64.lt (local.get $r) (f64.const 0)) (then (return (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $walk)))
    (i32.sub (local.get $V) (i32.const 1)))

  ;; draw_weights: w_i = exp((l_i − max)/T) into $w (core/data.ts's softmaxWeights); returns Σw
  ;; in order. max skips NaNs as JS's `l > max` does (pmax: m < l ? l : m).
  (func $draw_weights (export "draw_weights") (param $l i32) (param $V i32) (param $T f64) (param $w i32) (result f64)
    (local $i i32) (local $v4 i32) (local $mv v128) (local $m f32) (local $x f32) (local $M v128) (local $TT v128)
    (local $e v128) (local $sum f64) (local $r f64)
    (local.set $mv (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $v4 (i32.and (local.get $V) (i32.const -4)))
    (local.set $i (i32.const 0))
    (block $mx_done (loop $mx
      (br_if $mx_done (i32.ge_u (local.get $i) (local.get $v4)))
      (local.set $mv (f32x4.pmax (local.get $mv) (v128.load (i32.add (local.get $l) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $mx)))
    (local.set $m (f32.const -inf))
    (if (f32.gt (f32x4.extract_lane 0 (local.get $mv)) (local.get $m)) (then (local.set $m (f32x4.extract_lane 0 (local.get $mv)))))
    (if (f32.gt (f32x4.extract_lane 1 (local.get $mv)) (local.get $m)) (then (local.set $m (f32x4.extract_lane 1 (local.get $mv)))))
    (if (f32.gt (f32x4.extract_lane 2 (local.get $mv)) (local.get $m)) (then (local.set $m (f32x4.extract_lane 2 (local.get $mv)))))
    (if (f32.gt (f32x4.extract_lane 3 (local.get $mv)) (local.get $m)) (then (local.set $m (f32x4.extract_lane 3 (local.get $mv)))))
    (local.set $i (local.get $v4))
    (block $mt_done (loop $mt
      (br_if $mt_done (i32.ge_u (local.get $i) (local.get $V)))
      (local.set $x (f32.load (i32.add (local.get $l) (i32.shl (local.get $i) (i32.const 2)))))
      (if (f32.gt (local.get $x) (local.get $m)) (then (local.set $m (local.get $x))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $mt)))
    ;; weights, two at a time, and their sum in order
    (local.set $M (f64x2.splat (f64.promote_f32 (local.get $m))))
    (local.set $TT (f64x2.splat (local.get $T)))
    (local.set $i (i32.const 0))
    (block $w_done (loop $wl
      (br_if $w_done (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $V)))
      (local.set $e (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $l) (i32.shl (local.get $i) (i32.const 2)))))
                               (local.get $M)))
      ;; (x / 1 = x exactly: the division is skipped at T = 1, the default sets' temperature)
      (if (f64.ne (local.get $T) (f64.const 1)) (then (local.set $e (f64x2.div (local.get $e) (local.get $TT)))))
      (local.set $e (call $exp_pair (local.get $e)))
      (v128.store (i32.add (local.get $w) (i32.shl (local.get $i) (i32.const 3))) (local.get $e))
      (local.set $sum (f64.add (f64.add (local.get $sum) (f64x2.extract_lane 0 (local.get $e))) (f64x2.extract_lane 1 (local.get $e))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $wl)))
    (if (i32.lt_u (local.get $i) (local.get $V))
      (then
        (local.set $r (call $exp_f64 (f64.div (f64.sub (f64.promote_f32 (f32.load (i32.add (local.get $l) (i32.shl (local.get $i) (i32.const 2)))))
                                                       (f64.promote_f32 (local.get $m))) (local.get $T))))
        (f64.store (i32.add (local.get $w) (i32.shl (local.get $i) (i32.const 3))) (local.get $r))
        (local.set $sum (f64.add (local.get $sum) (local.get $r)))))
    (local.get $sum))

  ;; draw_rows: out[r] (i32) ← draw(logits row r, V, temps[r], us[r]) for r in [r0, r1);
  ;; temps and us float64, $w a float64 scratch of V.
  (func $draw_rows (export "draw_rows") (param $logits i32) (param $V i32) (param $temps i32) (param $us i32) (param $out i32)
                     (param $w i32) (param $r0 i32) (param $r1 i32)
    (local $r i32)
    (local.set $r (local.get $r0))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $r) (local.get $r1)))
      (i32.store (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 2)))
        (call $draw (i32.add (local.get $logits) (i32.shl (i32.mul (local.get $r) (local.get $V)) (i32.const 2))) (local.get $V)
          (f64.load (i32.add (local.get $temps) (i32.shl (local.get $r) (i32.const 3))))
          (f64.load (i32.add (local.get $us) (i32.shl (local.get $r) (i32.const 3))))
          (local.get $w)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; GPTQ's calibration Hessian (core/quant/hessian.ts): H = 2/N · XᵀX as gptq.py's running
  ;; average over sequences, in float64. Entry (a, b), a ≤ b, is the float64 sequence
  ;;   per sequence s: h ← h · decay_s; per row t of s: h ← h + (f_s · x_ta) · x_tb,
  ;;   skipped when f_s · x_ta = 0,
  ;; and must come out bit for bit as core's reference computes it. So an entry's sum is
  ;; never split: SIMD runs across 16 entries at once (8 f64x2 sums, each entry in its own
  ;; lane, rows in order, mul then add, never fused). The caller walks the rows in blocks
  ;; (a block of x stays in cache while every entry passes over it), keeping the running
  ;; sums in `acc` between blocks; a block that starts a sequence scales them by its decay
  ;; first (1 otherwise: exact).
  ;;   $x    x row-major [·, ld] float32 (columns past the real ones: zeros, at least 16)
  ;;   $t0 $t1  the block's rows; $f = f_s; $d: decay_s or 1
  ;;   $acc  running sums, float64, in and out
  ;; hess_row: entries (a, b0 + i), i < nb (a multiple of 16): x_ta is shared, so the zero
  ;;   test is one branch per row.
  (func $hess_row (export "hess_row") (param $x i32) (param $ld i32) (param $t0 i32) (param $t1 i32)
                    (param $f f64) (param $dd f64) (param $a i32) (param $b0 i32) (param $nb i32) (param $acc i32)
    (local $i i32) (local $t i32) (local $row i32) (local $stride i32) (local $p i32) (local $q i32)
    (local $xa f64) (local $d v128) (local $xs v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128)
    (local.set $stride (i32.shl (local.get $ld) (i32.const 2)))
    (local.set $d (f64x2.splat (local.get $dd)))
    (local.set $i (i32.const 0))
    (block $idone (loop $il
      (br_if $idone (i32.ge_u (local.get $i) (local.get $nb)))
      (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 3))))
      (local.set $c0 (f64x2.mul (v128.load offset=0 (local.get $q)) (local.get $d)))
      (local.set $c1 (f64x2.mul (v128.load offset=16 (local.get $q)) (local.get $d)))
      (local.set $c2 (f64x2.mul (v128.load offset=32 (local.get $q)) (local.get $d)))
      (local.set $c3 (f64x2.mul (v128.load offset=48 (local.get $q)) (local.get $d)))
      (local.set $c4 (f64x2.mul (v128.load offset=64 (local.get $q)) (local.get $d)))
      (local.set $c5 (f64x2.mul (v128.load offset=80 (local.get $q)) (local.get $d)))
      (local.set $c6 (f64x2.mul (v128.load offset=96 (local.get $q)) (local.get $d)))
      (local.set $c7 (f64x2.mul (v128.load offset=112 (local.get $q)) (local.get $d)))
      (local.set $t (local.get $t0))
      (local.set $row (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $stride))))
      (block $tdone (loop $tl
        (br_if $tdone (i32.ge_u (local.get $t) (local.get $t1)))
        (local.set $xa (f64.mul (local.get $f)
          (f64.promote_f32 (f32.load (i32.add (local.get $row) (i32.shl (local.get $a) (i32.const 2)))))))
        (if (f64.ne (local.get $xa) (f64.const 0)) (then
          (local.set $xs (f64x2.splat (local.get $xa)))
          (local.set $p (i32.add (local.get $row) (i32.shl (i32.add (local.get $b0) (local.get $i)) (i32.const 2))))
            (local.set $c0 (f64x2.add (local.get $c0)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=0 (local.get $p))))))
            (local.set $c1 (f64x2.add (local.get $c1)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $p))))))
            (local.set $c2 (f64x2.add (local.get $c2)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=16 (local.get $p))))))
            (local.set $c3 (f64x2.add (local.get $c3)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=24 (local.get $p))))))
            (local.set $c4 (f64x2.add (local.get $c4)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=32 (local.get $p))))))
            (local.set $c5 (f64x2.add (local.get $c5)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=40 (local.get $p))))))
            (local.set $c6 (f64x2.add (local.get $c6)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=48 (local.get $p))))))
            (local.set $c7 (f64x2.add (local.get $c7)
              (f64x2.mul (local.get $xs) (f64x2.promote_low_f32x4 (v128.load64_zero offset=56 (local.get $p))))))))
        (local.set $row (i32.add (local.get $row) (local.get $stride)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $tl)))
      (v128.store offset=0 (local.get $q) (local.get $c0))
      (v128.store offset=16 (local.get $q) (local.get $c1))
      (v128.store offset=32 (local.get $q) (local.get $c2))
      (v128.store offset=48 (local.get $q) (local.get $c3))
      (v128.store offset=64 (local.get $q) (local.get $c4))
      (v128.store offset=80 (local.get $q) (local.get $c5))
      (v128.store offset=96 (local.get $q) (local.get $c6))
      (v128.store offset=112 (local.get $q) (local.get $c7))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $il)))
  )

  ;; hess_col: entries (a0 + i, b), i < na (a multiple of 16): x_ta differs per lane, so the
  ;;   zero test is a per-lane select.
  (func $hess_col (export "hess_col") (param $x i32) (param $ld i32) (param $t0 i32) (param $t1 i32)
                    (param $f f64) (param $dd f64) (param $b i32) (param $a0 i32) (param $na i32) (param $acc i32)
    (local $i i32) (local $t i32) (local $row i32) (local $stride i32) (local $p i32) (local $q i32)
    (local $d v128) (local $fv v128) (local $xs v128) (local $v v128) (local $zero v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128)
    (local.set $stride (i32.shl (local.get $ld) (i32.const 2)))
    (local.set $d (f64x2.splat (local.get $dd)))
    (local.set $fv (f64x2.splat (local.get $f)))
    (local.set $zero (v128.const i64x2 0 0))
    (local.set $i (i32.const 0))
    (block $idone (loop $il
      (br_if $idone (i32.ge_u (local.get $i) (local.get $na)))
      (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 3))))
      (local.set $c0 (f64x2.mul (v128.load offset=0 (local.get $q)) (local.get $d)))
      (local.set $c1 (f64x2.mul (v128.load offset=16 (local.get $q)) (local.get $d)))
      (local.set $c2 (f64x2.mul (v128.load offset=32 (local.get $q)) (local.get $d)))
      (local.set $c3 (f64x2.mul (v128.load offset=48 (local.get $q)) (local.get $d)))
      (local.set $c4 (f64x2.mul (v128.load offset=64 (local.get $q)) (local.get $d)))
      (local.set $c5 (f64x2.mul (v128.load offset=80 (local.get $q)) (local.get $d)))
      (local.set $c6 (f64x2.mul (v128.load offset=96 (local.get $q)) (local.get $d)))
      (local.set $c7 (f64x2.mul (v128.load offset=112 (local.get $q)) (local.get $d)))
      (local.set $t (local.get $t0))
      (local.set $row (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $stride))))
      (block $tdone (loop $tl
        (br_if $tdone (i32.ge_u (local.get $t) (local.get $t1)))
        (local.set $xs (f64x2.splat
          (f64.promote_f32 (f32.load (i32.add (local.get $row) (i32.shl (local.get $b) (i32.const 2)))))))
        (local.set $p (i32.add (local.get $row) (i32.shl (i32.add (local.get $a0) (local.get $i)) (i32.const 2))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=0 (local.get $p)))))
          (local.set $c0 (v128.bitselect
            (f64x2.add (local.get $c0) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c0)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $p)))))
          (local.set $c1 (v128.bitselect
            (f64x2.add (local.get $c1) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c1)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=16 (local.get $p)))))
          (local.set $c2 (v128.bitselect
            (f64x2.add (local.get $c2) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c2)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=24 (local.get $p)))))
          (local.set $c3 (v128.bitselect
            (f64x2.add (local.get $c3) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c3)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=32 (local.get $p)))))
          (local.set $c4 (v128.bitselect
            (f64x2.add (local.get $c4) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c4)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=40 (local.get $p)))))
          (local.set $c5 (v128.bitselect
            (f64x2.add (local.get $c5) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c5)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=48 (local.get $p)))))
          (local.set $c6 (v128.bitselect
            (f64x2.add (local.get $c6) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c6)
            (f64x2.ne (local.get $v) (local.get $zero))))
          (local.set $v (f64x2.mul (local.get $fv) (f64x2.promote_low_f32x4 (v128.load64_zero offset=56 (local.get $p)))))
          (local.set $c7 (v128.bitselect
            (f64x2.add (local.get $c7) (f64x2.mul (local.get $v) (local.get $xs)))
            (local.get $c7)
            (f64x2.ne (local.get $v) (local.get $zero))))
        (local.set $row (i32.add (local.get $row) (local.get $stride)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $tl)))
      (v128.store offset=0 (local.get $q) (local.get $c0))
      (v128.store offset=16 (local.get $q) (local.get $c1))
      (v128.store offset=32 (local.get $q) (local.get $c2))
      (v128.store offset=48 (local.get $q) (local.get $c3))
      (v128.store offset=64 (local.get $q) (local.get $c4))
      (v128.store offset=80 (local.get $q) (local.get $c5))
      (v128.store offset=96 (local.get $q) (local.get $c6))
      (v128.store offset=112 (local.get $q) (local.get $c7))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $il)))
  )

  ;; ---------------------------------------------------------------------------------
  ;; The float64 product behind GPTQ's Cholesky factor, inverse and lazy update (kernels/wasm/gptq.ts):
  ;; one column tile j0 … j0+3 of C [·, ldc] gets, for the rows i0 … i1−1 (4 at a time),
  ;;   C[i][j] ← C[i][j] + A[k][i]·B[k][j]   for k = k0, k0+1, … k1−1, in that order,
  ;; each entry in its own lane, mul then add, never fused: the float64 sequence of core's
  ;; reference loops (core/quant/cholesky.ts), whose subtractions the caller turns into
  ;; additions by storing A negated (x − a·b and x + (−a)·b are the same IEEE operation).
  ;; A[k][i] is at $A + 8·(i·ai + k·ak) for i a multiple of 4 (rows i+1 … i+3 follow it),
  ;; B[k][j] likewise with bj, bk: k-major matrices (ai = 1, ak = ld) or packed tiles of 4
  ;; (ai = K, ak = 4). Per k one tile of B is two loads and each row of A one broadcast;
  ;; C's tile stays in 8 f64x2 registers over k. The row tiles share the tile of B.
  (func $gemm_add (export "gemm_add") (param $C i32) (param $ldc i32) (param $A i32) (param $ai i32) (param $ak i32)
                    (param $B i32) (param $bj i32) (param $bk i32) (param $j0 i32) (param $i0 i32) (param $i1 i32)
                    (param $k0 i32) (param $k1 i32)
    (local $i i32) (local $k i32) (local $pc i32) (local $pa i32) (local $pb i32)
    (local $sa i32) (local $sb i32) (local $sc i32)
    (local $b0 v128) (local $b1 v128) (local $a v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $sa (i32.shl (local.get $ak) (i32.const 3)))
    (local.set $sb (i32.shl (local.get $bk) (i32.const 3)))
    (local.set $sc (i32.shl (local.get $ldc) (i32.const 3)))
    (local.set $i (local.get $i0))
    (block $idone (loop $il
      (br_if $idone (i32.ge_s (local.get $i) (local.get $i1)))
      (local.set $pc (i32.add (local.get $C)
        (i32.shl (i32.add (i32.mul (local.get $i) (local.get $ldc)) (local.get $j0)) (i32.const 3))))
      (local.set $c00 (v128.load offset=0 (local.get $pc)))
      (local.set $c01 (v128.load offset=16 (local.get $pc)))
      (local.set $c10 (v128.load offset=0 (i32.add (local.get $pc) (local.get $sc))))
      (local.set $c11 (v128.load offset=16 (i32.add (local.get $pc) (local.get $sc))))
      (local.set $c20 (v128.load offset=0 (i32.add (local.get $pc) (i32.shl (local.get $sc) (i32.const 1)))))
      (local.set $c21 (v128.load offset=16 (i32.add (local.get $pc) (i32.shl (local.get $sc) (i32.const 1)))))
      (local.set $c30 (v128.load offset=0 (i32.add (local.get $pc) (i32.mul (local.get $sc) (i32.const 3)))))
      (local.set $c31 (v128.load offset=16 (i32.add (local.get $pc) (i32.mul (local.get $sc) (i32.const 3)))))
      (local.set $pa (i32.add (local.get $A) (i32.shl (i32.add
        (i32.mul (local.get $k0) (local.get $ak)) (i32.mul (local.get $i) (local.get $ai))) (i32.const 3))))
      (local.set $pb (i32.add (local.get $B) (i32.shl (i32.add
        (i32.mul (local.get $k0) (local.get $bk)) (i32.mul (local.get $j0) (local.get $bj))) (i32.const 3))))
      (local.set $k (local.get $k0))
      (block $kdone (loop $kl
        (br_if $kdone (i32.ge_s (local.get $k) (local.get $k1)))
        (local.set $b0 (v128.load offset=0 (local.get $pb)))
        (local.set $b1 (v128.load offset=16 (local.get $pb)))
        (local.set $a (f64x2.splat (f64.load offset=0 (local.get $pa))))
        (local.set $c00 (f64x2.add (local.get $c00) (f64x2.mul (local.get $a) (local.get $b0))))
        (local.set $c01 (f64x2.add (local.get $c01) (f64x2.mul (local.get $a) (local.get $b1))))
        (local.set $a (f64x2.splat (f64.load offset=8 (local.get $pa))))
        (local.set $c10 (f64x2.add (local.get $c10) (f64x2.mul (local.get $a) (local.get $b0))))
        (local.set $c11 (f64x2.add (local.get $c11) (f64x2.mul (local.get $a) (local.get $b1))))
        (local.set $a (f64x2.splat (f64.load offset=16 (local.get $pa))))
        (local.set $c20 (f64x2.add (local.get $c20) (f64x2.mul (local.get $a) (local.get $b0))))
        (local.set $c21 (f64x2.add (local.get $c21) (f64x2.mul (local.get $a) (local.get $b1))))
        (local.set $a (f64x2.splat (f64.load offset=24 (local.get $pa))))
        (local.set $c30 (f64x2.add (local.get $c30) (f64x2.mul (local.get $a) (local.get $b0))))
        (local.set $c31 (f64x2.add (local.get $c31) (f64x2.mul (local.get $a) (local.get $b1))))
        (local.set $pa (i32.add (local.get $pa) (local.get $sa)))
        (local.set $pb (i32.add (local.get $pb) (local.get $sb)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $kl)))
      (v128.store offset=0 (local.get $pc) (local.get $c00))
      (v128.store offset=16 (local.get $pc) (local.get $c01))
      (v128.store offset=0 (i32.add (local.get $pc) (local.get $sc)) (local.get $c10))
      (v128.store offset=16 (i32.add (local.get $pc) (local.get $sc)) (local.get $c11))
      (v128.store offset=0 (i32.add (local.get $pc) (i32.shl (local.get $sc) (i32.const 1))) (local.get $c20))
      (v128.store offset=16 (i32.add (local.get $pc) (i32.shl (local.get $sc) (i32.const 1))) (local.get $c21))
      (v128.store offset=0 (i32.add (local.get $pc) (i32.mul (local.get $sc) (i32.const 3))) (local.get $c30))
      (v128.store offset=16 (i32.add (local.get $pc) (i32.mul (local.get $sc) (i32.const 3))) (local.get $c31))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $il)))
  )
)

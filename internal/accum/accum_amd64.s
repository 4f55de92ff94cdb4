//go:build amd64 && !purego

#include "textflag.h"

// func addAVX2(dst *float64, src *byte, n int)
// dst[i] += float64(src[i]) for i < n; n > 0 is a multiple of 16.
TEXT ·addAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

loop:
	VCVTPS2PD 0(SI), Y0
	VCVTPS2PD 16(SI), Y1
	VCVTPS2PD 32(SI), Y2
	VCVTPS2PD 48(SI), Y3
	VADDPD    0(DI), Y0, Y0
	VADDPD    32(DI), Y1, Y1
	VADDPD    64(DI), Y2, Y2
	VADDPD    96(DI), Y3, Y3
	VMOVUPD   Y0, 0(DI)
	VMOVUPD   Y1, 32(DI)
	VMOVUPD   Y2, 64(DI)
	VMOVUPD   Y3, 96(DI)
	ADDQ      $64, SI
	ADDQ      $128, DI
	SUBQ      $16, CX
	JNZ       loop
	VZEROUPPER
	RET

// func sumSquaresAVX2(src *byte, n int) float64
// Σ float64(src[i])² for i < n; n > 0 is a multiple of 16.
TEXT ·sumSquaresAVX2(SB), NOSPLIT, $0-24
	MOVQ   src+0(FP), SI
	MOVQ   n+8(FP), CX
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7

sqloop:
	VCVTPS2PD   0(SI), Y0
	VCVTPS2PD   16(SI), Y1
	VCVTPS2PD   32(SI), Y2
	VCVTPS2PD   48(SI), Y3
	VFMADD231PD Y0, Y0, Y4
	VFMADD231PD Y1, Y1, Y5
	VFMADD231PD Y2, Y2, Y6
	VFMADD231PD Y3, Y3, Y7
	ADDQ        $64, SI
	SUBQ        $16, CX
	JNZ         sqloop
	VADDPD       Y5, Y4, Y4
	VADDPD       Y7, Y6, Y6
	VADDPD       Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPD       X5, X4, X4
	VHADDPD      X4, X4, X4
	VZEROUPPER
	MOVSD        X4, ret+16(FP)
	RET

// func readAVX2(src *byte, n int) uint64
// XOR of every 32-byte lane of src; n > 0 is a multiple of 128.
TEXT ·readAVX2(SB), NOSPLIT, $0-24
	MOVQ   src+0(FP), SI
	MOVQ   n+8(FP), CX
	VPXOR  Y4, Y4, Y4
	VPXOR  Y5, Y5, Y5
	VPXOR  Y6, Y6, Y6
	VPXOR  Y7, Y7, Y7

rdloop:
	VPXOR 0(SI), Y4, Y4
	VPXOR 32(SI), Y5, Y5
	VPXOR 64(SI), Y6, Y6
	VPXOR 96(SI), Y7, Y7
	ADDQ  $128, SI
	SUBQ  $128, CX
	JNZ   rdloop
	VPXOR        Y5, Y4, Y4
	VPXOR        Y7, Y6, Y6
	VPXOR        Y6, Y4, Y4
	VEXTRACTI128 $1, Y4, X5
	VPXOR        X5, X4, X4
	VPSRLDQ      $8, X4, X5
	VPXOR        X5, X4, X4
	VZEROUPPER
	MOVQ         X4, ret+16(FP)
	RET

// func add4AVX2(dst *float64, s0, s1, s2, s3 *byte, n int)
// dst[i] = (((dst[i] + s0[i]) + s1[i]) + s2[i]) + s3[i] for i < n, each
// source widened to float64: the same additions in the same order as four
// calls of addAVX2, with one read and one write of dst instead of four.
// n > 0 is a multiple of 8.
TEXT ·add4AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ s0+8(FP), SI
	MOVQ s1+16(FP), R8
	MOVQ s2+24(FP), R9
	MOVQ s3+32(FP), R10
	MOVQ n+40(FP), CX
	SHLQ $2, CX     // bytes of each source
	XORQ BX, BX     // byte offset into the sources; dst is at 2·BX

loop4:
	VMOVUPD   0(DI)(BX*2), Y0
	VMOVUPD   32(DI)(BX*2), Y1
	VCVTPS2PD 0(SI)(BX*1), Y2
	VCVTPS2PD 16(SI)(BX*1), Y3
	VADDPD    Y2, Y0, Y0
	VADDPD    Y3, Y1, Y1
	VCVTPS2PD 0(R8)(BX*1), Y4
	VCVTPS2PD 16(R8)(BX*1), Y5
	VADDPD    Y4, Y0, Y0
	VADDPD    Y5, Y1, Y1
	VCVTPS2PD 0(R9)(BX*1), Y2
	VCVTPS2PD 16(R9)(BX*1), Y3
	VADDPD    Y2, Y0, Y0
	VADDPD    Y3, Y1, Y1
	VCVTPS2PD 0(R10)(BX*1), Y4
	VCVTPS2PD 16(R10)(BX*1), Y5
	VADDPD    Y4, Y0, Y0
	VADDPD    Y5, Y1, Y1
	VMOVUPD   Y0, 0(DI)(BX*2)
	VMOVUPD   Y1, 32(DI)(BX*2)
	ADDQ      $32, BX
	CMPQ      BX, CX
	JNE       loop4
	VZEROUPPER
	RET

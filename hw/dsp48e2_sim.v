// Behavioural DSP48E2 for Verilator (which has no Xilinx primitives): the subset hw/dsp.py
// instantiates. Synthesis and Vivado use the real primitive; this file is added only to
// simulation builds (sim/runner.py). Covered: A/B input registers (AREG/BREG 0..2 with
// INMODE = 0, so the multiplier reads the last A/B register), MREG 0/1, PREG 0/1, the
// multiplier A[26:0] x B[17:0] signed, OPMODE X = Y = M (the product) or 0, Z in {0, PCIN,
// C} with CREG = 0, W = 0, ALUMODE 0000 (P = Z + W + X + Y). Anything else stops the
// simulation with a message, so a wider use cannot pass silently.
module DSP48E2 #(
    parameter integer AREG = 1, parameter integer BREG = 1, parameter integer ACASCREG = 1,
    parameter integer BCASCREG = 1, parameter integer MREG = 1, parameter integer PREG = 1,
    parameter integer CREG = 1, parameter integer DREG = 1, parameter integer ADREG = 1,
    parameter integer INMODEREG = 1, parameter integer OPMODEREG = 1,
    parameter integer ALUMODEREG = 1, parameter integer CARRYINREG = 1,
    parameter integer CARRYINSELREG = 1,
    parameter A_INPUT = "DIRECT", parameter B_INPUT = "DIRECT", parameter AMULTSEL = "A",
    parameter BMULTSEL = "B", parameter PREADDINSEL = "A", parameter USE_MULT = "MULTIPLY",
    parameter USE_SIMD = "ONE48", parameter USE_PATTERN_DETECT = "NO_PATDET"
) (
    input CLK,
    input [29:0] A, input [17:0] B, input [47:0] C, input [26:0] D, input [47:0] PCIN,
    input [29:0] ACIN, input [17:0] BCIN, input CARRYCASCIN, input MULTSIGNIN,
    input CARRYIN, input [2:0] CARRYINSEL, input [8:0] OPMODE, input [3:0] ALUMODE,
    input [4:0] INMODE,
    input CEA1, input CEA2, input CEB1, input CEB2, input CEM, input CEP, input CEC,
    input CED, input CEAD, input CECTRL, input CEALUMODE, input CEINMODE, input CECARRYIN,
    input RSTA, input RSTB, input RSTM, input RSTP, input RSTC, input RSTD, input RSTCTRL,
    input RSTALUMODE, input RSTINMODE, input RSTALLCARRYIN,
    output [47:0] P, output [47:0] PCOUT
);
    initial begin
        if (USE_MULT != "MULTIPLY" || AMULTSEL != "A" || BMULTSEL != "B"
                || A_INPUT != "DIRECT" || B_INPUT != "DIRECT" || USE_SIMD != "ONE48"
                || AREG > 2 || BREG > 2 || MREG > 1 || PREG > 1 || CREG != 0)
            $fatal(1, "DSP48E2 sim model: configuration outside the modelled subset");
    end

    reg [29:0] a1, a2;
    reg [17:0] b1, b2;
    reg signed [44:0] m_r;
    reg [47:0] p_r;
    wire [29:0] a_m = (AREG == 0) ? A : a2;
    wire [17:0] b_m = (BREG == 0) ? B : b2;
    wire signed [44:0] m_c = $signed(a_m[26:0]) * $signed(b_m);
    wire signed [44:0] m_v = (MREG == 1) ? m_r : m_c;
    wire [47:0] m48 = {{3{m_v[44]}}, m_v};
    wire [47:0] x = (OPMODE[1:0] == 2'b01) ? m48 : 48'd0;
    wire [47:0] z = (OPMODE[6:4] == 3'b001) ? PCIN : (OPMODE[6:4] == 3'b011) ? C : 48'd0;
    wire [47:0] alu = z + x;   // X = Y = M: the two partial products sum to the product
    always @(posedge CLK) begin
        if (OPMODE[1:0] != OPMODE[3:2] || OPMODE[1] || OPMODE[8:7] != 2'b00
                || OPMODE[6:4] == 3'b010 || OPMODE[6:4] > 3'b011 || ALUMODE != 4'b0000
                || INMODE != 5'b00000)
            $fatal(1, "DSP48E2 sim model: OPMODE/ALUMODE/INMODE outside the modelled subset");
        a1 <= A;
        a2 <= (AREG == 2) ? a1 : A;
        b1 <= B;
        b2 <= (BREG == 2) ? b1 : B;
        m_r <= m_c;
        p_r <= alu;
    end
    assign P = (PREG == 1) ? p_r : alu;
    assign PCOUT = P;
endmodule

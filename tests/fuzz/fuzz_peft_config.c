/*
 * tests/fuzz/fuzz_peft_config.c — adapter_config.json (adapters/ad_config.c,
 * through the private ad_plan_load) and then the whole PEFT import
 * (ad_adapter_load) on any config text: adapters are uploaded by users.
 *
 * The config parser reads a folder, not a buffer, so the input is written
 * to the temp folder of one of fuzz_ad.h's weight variants:
 *   byte 0: variant (mod 3), the rest: adapter_config.json.
 * Invariants: a resolved plan targets modules with rank >= 1 and finite
 * alpha; a loaded adapter passes fuzz_ad_check (shapes, finite weights,
 * blob round trip). Refusals carry a message.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "adapters/ad_int.h"
#include "adapters/adapter.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_ad.h"

int fuzz_peft_config(const uint8_t *data, size_t size)
{
	const loom_model_config *base = fuzz_ad_base();
	char path[2048];
	ad_plan plan;
	ad_adapter *a = NULL;
	loom_err rc;
	int v;

	if (size < 1)
		return 0;
	v = data[0] % FUZZ_AD_VARIANTS;
	snprintf(path, sizeof path, "%s/adapter_config.json", fuzz_ad_dir(v));
	fuzz_write_file(path, data + 1, size - 1);

	rc = ad_plan_load(fuzz_ad_dir(v), base, &plan);
	if (rc == LOOM_OK) {
		FUZZ_CHECK(plan.n_layers == base->n_layers && plan.slots, "plan of %d layers",
			   plan.n_layers);
		for (int i = 0; i < plan.n_layers * AD_N_TARGETS; i++) {
			const ad_slot_plan *s = &plan.slots[i];
			if (s->targeted)
				FUZZ_CHECK(s->rank >= 1 && isfinite(s->alpha),
					   "slot %d targeted with rank %d alpha %g", i, s->rank,
					   s->alpha);
		}
	} else {
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "plan error %d without a message", rc);
	}
	ad_plan_fini(&plan);

	rc = ad_adapter_load(fuzz_ad_dir(v), "fuzz", base, &a);
	if (rc == LOOM_OK) {
		fuzz_accepted = 1;
		fuzz_ad_check(a, base);
		ad_adapter_destroy(a);
	} else {
		FUZZ_CHECK(a == NULL, "error %d but *out set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "load error %d without a message", rc);
	}
	return 0;
}

static void fuzz_peft_config_add(fuzz_seeds *s, int v, const char *json)
{
	size_t n = strlen(json);
	unsigned char *b = malloc(n + 1);
	if (!b)
		abort();
	b[0] = (unsigned char)v;
	memcpy(b + 1, json, n);
	fuzz_seed_add(s, b, n + 1);
	free(b);
}

void fuzz_peft_config_seeds(fuzz_seeds *s)
{
	size_t n;
	char *real;

	for (int v = 0; v < FUZZ_AD_VARIANTS; v++)
		fuzz_peft_config_add(s, v, fuzz_ad_config(v));
	/* the real PEFT file (every key peft writes), with the weights of variant 0 */
	real = fuzz_read_file(fuzz_shared_path("fixtures/peft-trimmed-real/adapter_config.json"), &n);
	if (!real)
		abort();
	fuzz_peft_config_add(s, 0, real);
	free(real);
	fuzz_peft_config_add(s, 0, "{\"r\": 4, \"lora_alpha\": 4}");
	fuzz_peft_config_add(s, 0, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
				   "\"target_modules\": [\"q_proj\", \"v_proj\"], "
				   "\"layers_to_transform\": [0, 1], \"layers_pattern\": \"layers\", "
				   "\"exclude_modules\": [\"o_proj\"], \"alpha_pattern\": {\"q_proj\": 32}}");
	fuzz_peft_config_add(s, 1, "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 2, "
				   "\"target_modules\": \".*\\\\.(q|k|v|o|gate|up|down)_proj\", "
				   "\"exclude_modules\": \"nothing\"}");
	fuzz_peft_config_add(s, 2, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
				   "\"target_modules\": [\"model.layers.0.self_attn.q_proj\", "
				   "\"model.layers.1.self_attn.v_proj\", \"model.layers.1.mlp.down_proj\"], "
				   "\"rank_pattern\": {\"^model\\\\.layers\\\\.1\\\\.self_attn\\\\.v_proj\": 2, "
				   "\"down_proj\": 3}}");
	fuzz_peft_config_add(s, 0, "{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true, "
				   "\"bias\": \"lora_only\", \"modules_to_save\": [\"lm_head\"]}");
}

const fuzz_word fuzz_peft_config_dict[] = {
	FUZZ_W("\"peft_type\""), FUZZ_W("\"LORA\""), FUZZ_W("\"r\""), FUZZ_W("\"lora_alpha\""),
	FUZZ_W("\"use_rslora\""), FUZZ_W("\"target_modules\""), FUZZ_W("\"exclude_modules\""),
	FUZZ_W("\"layers_to_transform\""), FUZZ_W("\"layers_pattern\""), FUZZ_W("\"rank_pattern\""),
	FUZZ_W("\"alpha_pattern\""), FUZZ_W("\"bias\""), FUZZ_W("\"none\""), FUZZ_W("\"all\""),
	FUZZ_W("\"use_dora\""), FUZZ_W("\"modules_to_save\""), FUZZ_W("\"fan_in_fan_out\""),
	FUZZ_W("\"layer_replication\""), FUZZ_W("\"lora_bias\""),
	FUZZ_W("\"trainable_token_indices\""), FUZZ_W("\"target_parameters\""),
	FUZZ_W("\"all-linear\""), FUZZ_W("\"q_proj\""), FUZZ_W("\"k_proj\""), FUZZ_W("\"v_proj\""),
	FUZZ_W("\"o_proj\""), FUZZ_W("\"gate_proj\""), FUZZ_W("\"up_proj\""), FUZZ_W("\"down_proj\""),
	FUZZ_W("\"lm_head\""), FUZZ_W("\"embed_tokens\""), FUZZ_W("\"self_attn\""), FUZZ_W("\"mlp\""),
	FUZZ_W("\"model.layers.1.\""), FUZZ_W("\".*\""), FUZZ_W("\"(\""), FUZZ_W("\"\\\\d+\""),
	FUZZ_W("\"(?P<x>a)\""), FUZZ_W("\"[\""), FUZZ_W("\"\\\\\""), FUZZ_W("null"), FUZZ_W("true"),
	FUZZ_W("false"), FUZZ_W("[]"), FUZZ_W("{}"), FUZZ_W("-1"), FUZZ_W("0"), FUZZ_W("1e309"),
	FUZZ_W("2147483648"), FUZZ_W("0.5"),
	{ NULL, 0 },
};

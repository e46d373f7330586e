"""The phoneme table: espeak-ng IPA code points -> model input ids (id 0 is padding).

The single-character symbols of Piper's table, frozen here so that a Piper release cannot renumber a
trained model's inputs. No dependencies: training machines import it without the G2P stack.
"""

PHONEMES = (" !'(),-.:;?abcdefhijklmnopqrstuvwxyzæçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃ"
            "ʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ0123456789̧̪̯̩̃ʰˤε↓#\"↑̺̻gʦX̝̊ɝʷ")
PHONEME_IDS = {p: i + 1 for i, p in enumerate(PHONEMES)}
VOCAB_SIZE = len(PHONEMES) + 1  # with padding id 0
SPACE = PHONEME_IDS[" "]

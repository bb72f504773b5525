"""Caption sets for the official-SPICE tests (our own sentences), and a fixture whose SPICE-family scores are worked
out by hand from the scene-graph tuples SPICE extracts."""

# COCO style: one short sentence per caption, several references per image.
COCO = (
    {
        "bike": "A man riding a red bike down a dirt road.",
        "kitchen": "A small kitchen with white cabinets and a stove.",
        "giraffes": "Two giraffes standing next to a tall tree.",
        "pizza": "A pizza with cheese and tomatoes on a wooden table.",
    },
    {
        "bike": ["A man on a red bicycle rides along a dirt path.", "A person cycling down a country road.",
                 "Someone rides a bike past green fields."],
        "kitchen": ["A kitchen with white cupboards, a sink and an oven.", "A clean white kitchen with a gas stove.",
                    "The kitchen has a window above the sink.", "White cabinets line a narrow kitchen."],
        "giraffes": ["Two giraffes eat leaves from a tree.", "A pair of giraffes stand in a grassy field."],
        "pizza": ["A cheese pizza sits on a table next to a glass.", "A large pizza topped with tomato slices.",
                  "Someone is about to eat a pizza on a wooden board."],
    },
)

# PCCD length: multi-sentence aesthetic critiques of 30-60 words, three references per image.
PCCD = (
    {
        "portrait": "The soft window light falls nicely on her face and the warm tones give the portrait a calm mood. "
                    "The background is a little busy, so I would open the aperture to blur it and crop tighter on "
                    "the left side.",
        "landscape": "A strong composition with the river leading the eye toward the mountains. The sky is slightly "
                     "overexposed and the horizon tilts to the right. A graduated filter and a small rotation would "
                     "make this a much stronger landscape.",
        "street": "The timing is good and the man crossing the street gives the frame a story. The colors feel flat "
                  "and the shadows are muddy, so more contrast would help. The vertical lines of the buildings also "
                  "lean inward.",
    },
    {
        "portrait": [
            "Lovely use of natural light from the window, which gives her skin a warm glow. The eyes are sharp. The "
            "cluttered shelf behind her distracts from the subject, and a shallower depth of field would fix that.",
            "The pose is relaxed and the expression feels genuine. I like the warm color palette, but the frame is too "
            "loose; cropping in closer would give the face more weight and remove the empty wall on the right.",
            "Nice soft light, although the highlights on the forehead are close to clipping. Try a reflector to fill "
            "the shadow side of the face, and simplify the background so the portrait reads more clearly.",
        ],
        "landscape": [
            "The river makes a beautiful leading line into the valley and the mountains give a strong backdrop. "
            "Unfortunately the sky is blown out and the horizon is not level, which pulls the whole image off "
            "balance.",
            "Great location and a classic composition. The foreground rocks add depth and scale. The exposure favors "
            "the land, so the clouds lost all their detail; bracketing the shot or using a filter would keep both.",
            "I like how the curve of the water guides the viewer. The tilted horizon bothers me, and the colors of "
            "the grass look oversaturated. Straighten the image and pull back the saturation a little.",
        ],
        "street": [
            "Good decisive moment with the pedestrian stepping into the light. The image lacks punch, though; the "
            "tones are gray and flat. Adding contrast and correcting the converging verticals would help a lot.",
            "An interesting scene with a clear subject. The buildings lean because the camera was tilted up. The "
            "shadows are blocked up, and a little lift in the dark areas would reveal more of the street.",
            "The man gives the picture a sense of movement and the diagonal crosswalk is a nice touch. The color is "
            "dull and the frame feels crowded on the right edge.",
        ],
    },
)

# One image (SPICE's mean over images is then that image's score).
ONE_IMAGE = (
    {"sunset": "The orange sunset over the calm sea is beautiful, but the horizon sits in the middle of the frame."},
    {"sunset": ["A beautiful orange sky over the sea at sunset.", "The horizon cuts the photo in half; place it lower.",
                "Calm water reflects the warm colors of the sunset."]},
)

SETS = {"coco": COCO, "pccd": PCCD, "one image": ONE_IMAGE}

# SPICE's tuples (lemmas; objects, (object, attribute), (object, relation, object)), per caption:
#   "a dog on a sofa"           {dog, sofa, (dog, on, sofa)}
#   "a dog"                     {dog}
#   "a brown dog on a red sofa" {dog, sofa, (dog, brown), (sofa, red), (dog, on, sofa)}
#   "a brown dog"               {dog, (dog, brown)}
#   "a black cat"               {cat, (cat, black)}
# P = matched candidate tuples / candidate tuples, R = matched reference tuples / reference tuples, F = 2PR/(P+R):
#   x vs "a dog":                     P 1/3, R 1,   F 1/2
#   x vs "a brown dog on a red sofa": P 1,   R 3/5, F 3/4
#   x vs both (5 tuples):             P 1,   R 3/5, F 3/4
#   y vs "a dog":                     P 1/2, R 1,   F 2/3
#   y vs "a black cat":               P 0,   R 0,   F 0
#   y vs both (dog, cat, (cat, black)): P 1/2, R 1/3, F 2/5
HAND = (
    {"x": "a dog on a sofa", "y": "a brown dog"},
    {"x": ["a dog", "a brown dog on a red sofa"], "y": ["a dog", "a black cat"]},
)
HAND_SCORES = {
    "SPICE": (3 / 4 + 2 / 5) / 2,
    "SPICE-L": (3 / 4 + 2 / 3) / 2,
    # each maximum over the references on its own
    "independent": {"Precision": (1 + 1 / 2) / 2, "Recall": (1 + 1) / 2},
    # both from the best-F reference: x's second, y's first
    "best_f": {"Precision": (1 + 1 / 2) / 2, "Recall": (3 / 5 + 1) / 2},
}

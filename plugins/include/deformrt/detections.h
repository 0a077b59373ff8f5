// Detections of a whole-detector engine as host data: reading the fixed-size outputs, matching two
// sets (the self-check), and pasting masks into the image (what `deformrt predict` draws). No CUDA or
// TensorRT: the math is the same as exporter/evaluation/detections.py and is tested against it.
//
// Conventions are upstream maskrcnn-benchmark's: boxes (x1, y1, x2, y2) in input pixels with the legacy
// "+1" widths; labels are the model's class ids; masks are [M, M] probabilities of the box's class.
#pragma once

#include "deformrt/hostTensor.h"
#include "deformrt/status.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace deformrt
{

//! The output names of a detector file (`deformrt export --detector`); masks only for Mask R-CNN.
namespace detector
{
constexpr char const* kNumDetections = "num_detections"; //!< [B, 1] int32
constexpr char const* kBoxes = "detection_boxes";        //!< [B, D, 4] float
constexpr char const* kScores = "detection_scores";      //!< [B, D] float
constexpr char const* kClasses = "detection_classes";    //!< [B, D] int32
constexpr char const* kMasks = "detection_masks";        //!< [B, D, M, M] float probabilities
constexpr char const* kImageSizes = "image_sizes";       //!< input [B, 2] int32: unpadded height, width
} // namespace detector

//! One image's detections, cut to its count.
struct ImageDetections
{
    std::vector<std::array<float, 4>> boxes;
    std::vector<float> scores;
    std::vector<int32_t> labels;
    std::vector<float> masks; //!< size() * maskSize * maskSize, empty without masks
    int64_t maskSize{0};      //!< M; 0 without masks

    std::size_t size() const noexcept
    {
        return scores.size();
    }
    float const* mask(std::size_t i) const noexcept
    {
        return masks.data() + i * static_cast<std::size_t>(maskSize * maskSize);
    }
};

//! True when `outputs` holds a detector's outputs (num_detections and the boxes, scores and classes).
bool isDetectorOutputs(std::map<std::string, HostTensor> const& outputs);

//! Every image of a detector's fixed-size outputs, each cut to num_detections. An error names the output
//! whose shape disagrees or a count outside 0..D.
Expected<std::vector<ImageDetections>> detectionsFromOutputs(std::map<std::string, HostTensor> const& outputs);

//! How two detection sets correspond: pairs (reference index, other index) of the same label with
//! IoU >= the threshold, matched greedily by descending reference score (each detection used once).
struct DetectionMatch
{
    std::vector<std::pair<std::size_t, std::size_t>> pairs;
    std::vector<std::size_t> unmatchedReference;
    std::vector<std::size_t> unmatchedOther;
};

//! IoU with the legacy +1 widths, in float64; 0 when the union is empty.
double legacyIou(std::array<float, 4> const& a, std::array<float, 4> const& b) noexcept;

DetectionMatch matchDetections(ImageDetections const& reference, ImageDetections const& other, double iouThreshold);

//! What the self-check allows (deploy.conf's match_iou_*, score_tolerance_*, mask_tolerance_*, borderline_*).
struct DetectionTolerances
{
    double matchIou{0.99};     //!< a pair needs the same label and IoU >= this
    double score{1e-3};        //!< max |score difference| of a pair
    double mask{1e-2};         //!< max |mask probability difference| of a pair
    double borderline{1e-3};   //!< an unmatched detection this close to a cut is borderline, not a failure
    double scoreThreshold{0.0}; //!< the model's score threshold: one of the cuts (0: none)
    double nmsThreshold{0.0};   //!< the model's NMS IoU threshold (0: no NMS near-ties are looked for)
};

//! One image's engine detections against its reference detections (the rule of
//! exporter/evaluation/detection_sets.py, which tests/test_runtime_native.py holds this to).
struct DetectionCheck
{
    std::size_t referenceCount{0};
    std::size_t otherCount{0};
    std::size_t matched{0};
    //! Unmatched on either side with a score within `borderline` of a cut (the score threshold if > 0, or the
    //! lowest score kept when a side reached its fixed size D), or an NMS near-tie (a same-class detection on
    //! either side overlaps it with an IoU within `borderline` of the NMS threshold, or the other side has an
    //! unmatched same-class detection overlapping it by at least the NMS threshold - 0.05 with a score within
    //! `borderline`: the two kept different members of a pair): named, not a failure.
    std::size_t borderline{0};
    std::size_t unmatched{0}; //!< the other unmatched detections, on both sides: failures
    double maxBoxError{0.0};  //!< px, over the pairs
    double maxScoreError{0.0};
    double maxMaskError{0.0}; //!< 0 without masks
    bool finite{true};        //!< no NaN or Inf in the compared boxes, scores and masks

    bool passes(DetectionTolerances const& tolerances) const noexcept
    {
        return finite && unmatched == 0 && maxScoreError <= tolerances.score && maxMaskError <= tolerances.mask;
    }
};

//! `capacity` is D, the outputs' fixed number of rows (a full side was cut by the cap).
DetectionCheck checkDetections(ImageDetections const& reference, ImageDetections const& other,
    DetectionTolerances const& tolerances, std::size_t capacity);

//! A [height, width] 0/1 mask of the image from an [M, M] probability mask and its box: upstream's
//! paste_mask_in_image (pad the mask by `padding` cells, grow the box by the same factor, truncate it to
//! integers, resize bilinearly with half-pixel centres to the box, threshold, place, crop to the image),
//! computed only where the box meets the image. Errors: a non-finite or absurd box, bad sizes, a
//! negative threshold.
Expected<std::vector<uint8_t>> pasteMask(float const* mask, int64_t maskSize, std::array<float, 4> const& box,
    int64_t imageHeight, int64_t imageWidth, float threshold = 0.5F, int64_t padding = 1);

//! Boxes mapped from the model's input resolution (inHeight x inWidth, the image_sizes entry) to the
//! original image's (as `deformrt predict` does: x by width ratio, y by height ratio, in float32).
Status scaleBoxes(ImageDetections& detections, int64_t inHeight, int64_t inWidth, int64_t outHeight, int64_t outWidth);

//! Every detection's mask pasted into a [D, height, width] uint8 tensor (rows past the count stay 0).
Expected<HostTensor> pasteMasks(ImageDetections const& detections, int64_t rows, int64_t imageHeight,
    int64_t imageWidth, float threshold = 0.5F);

} // namespace deformrt

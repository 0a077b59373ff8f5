// Detections as host data (see deformrt/detections.h). The mask pasting reproduces
// exporter/evaluation/detections.py's paste_mask operation for operation in float32, so this file is
// compiled without floating-point contraction (an FMA would round differently and flip a pixel that sits
// exactly on the threshold).
#include "deformrt/detections.h"

#include <algorithm>
#include <exception>
#include <cmath>
#include <limits>
#include <numeric>

namespace deformrt
{
namespace
{
HostTensor const* find(std::map<std::string, HostTensor> const& outputs, char const* name)
{
    auto it = outputs.find(name);
    return it == outputs.end() ? nullptr : &it->second;
}

Status shapeError(char const* name, HostTensor const& tensor, std::string const& expected)
{
    return Status::error(std::string("detector output ") + name + " has shape " + formatShape(tensor.shape)
        + ", expected " + expected);
}

bool isFiniteBox(std::array<float, 4> const& box) noexcept
{
    return std::all_of(box.begin(), box.end(), [](float v) { return std::isfinite(v); });
}

// Pasting only makes sense for boxes near an image; beyond this the float32 pixel arithmetic of the
// reference loses integers anyway.
constexpr float kMaxBoxCoordinate = 1e6F;
constexpr int64_t kMaxImageSide = 1 << 16;
constexpr int64_t kMaxMaskSize = 4096;
// How far below the NMS threshold two swapped members of a near-tied pair may overlap (boxes move too):
// NMS_IOU_SLACK of exporter/evaluation/detection_sets.py.
constexpr double kNmsIouSlack = 0.05;

//! One axis of a half-pixel-centre bilinear resize from `inSize` to `outSize` samples: the two source
//! indices and the weight of the second, for output index `i` (float32 as numpy computes it).
struct AxisSample
{
    int64_t low;
    int64_t high;
    float frac;
};

AxisSample axisSample(int64_t i, int64_t inSize, int64_t outSize) noexcept
{
    float const scale = static_cast<float>(static_cast<double>(inSize) / static_cast<double>(outSize));
    float const src = std::max((static_cast<float>(i) + 0.5F) * scale - 0.5F, 0.0F);
    int64_t const low = std::min(static_cast<int64_t>(std::floor(src)), inSize - 1);
    int64_t const high = std::min(low + 1, inSize - 1);
    return AxisSample{low, high, src - static_cast<float>(low)};
}
} // namespace

bool isDetectorOutputs(std::map<std::string, HostTensor> const& outputs)
{
    return find(outputs, detector::kNumDetections) != nullptr && find(outputs, detector::kBoxes) != nullptr
        && find(outputs, detector::kScores) != nullptr && find(outputs, detector::kClasses) != nullptr;
}

namespace
{
Expected<std::vector<ImageDetections>> readDetections(std::map<std::string, HostTensor> const& outputs)
{
    if (!isDetectorOutputs(outputs))
    {
        return Status::error(std::string("not a detector's outputs: ") + detector::kNumDetections + ", "
            + detector::kBoxes + ", " + detector::kScores + " and " + detector::kClasses + " are needed");
    }
    HostTensor const& count = *find(outputs, detector::kNumDetections);
    HostTensor const& boxes = *find(outputs, detector::kBoxes);
    HostTensor const& scores = *find(outputs, detector::kScores);
    HostTensor const& classes = *find(outputs, detector::kClasses);
    HostTensor const* masks = find(outputs, detector::kMasks);
    if (boxes.shape.size() != 3 || boxes.shape[2] != 4)
    {
        return shapeError(detector::kBoxes, boxes, "[B, D, 4]");
    }
    int64_t const batch = boxes.shape[0];
    int64_t const rows = boxes.shape[1];
    std::vector<int64_t> const perImage{batch, rows};
    if (scores.shape != perImage)
    {
        return shapeError(detector::kScores, scores, formatShape(perImage));
    }
    if (classes.shape != perImage)
    {
        return shapeError(detector::kClasses, classes, formatShape(perImage));
    }
    if (count.shape != std::vector<int64_t>{batch, 1} && count.shape != std::vector<int64_t>{batch})
    {
        return shapeError(detector::kNumDetections, count, formatShape({batch, 1}));
    }
    int64_t maskSize = 0;
    if (masks != nullptr)
    {
        if (masks->shape.size() != 4 || masks->shape[0] != batch || masks->shape[1] != rows
            || masks->shape[2] != masks->shape[3] || masks->shape[2] < 1)
        {
            return shapeError(detector::kMasks, *masks, formatShape(perImage) + "xMxM");
        }
        maskSize = masks->shape[2];
    }
    std::vector<double> const n = toDouble(count);
    std::vector<double> const b = toDouble(boxes);
    std::vector<double> const s = toDouble(scores);
    std::vector<double> const c = toDouble(classes);
    std::vector<double> const m = masks != nullptr ? toDouble(*masks) : std::vector<double>{};
    std::size_t const maskArea = static_cast<std::size_t>(maskSize * maskSize);
    std::vector<ImageDetections> images(static_cast<std::size_t>(batch));
    for (int64_t image = 0; image < batch; ++image)
    {
        double const found = n[static_cast<std::size_t>(image)];
        if (!(found >= 0.0 && found <= static_cast<double>(rows)) || found != std::floor(found))
        {
            return Status::error(std::string(detector::kNumDetections) + "[" + std::to_string(image) + "] is "
                + std::to_string(found) + ", outside 0.." + std::to_string(rows));
        }
        ImageDetections& out = images[static_cast<std::size_t>(image)];
        out.maskSize = maskSize;
        auto const kept = static_cast<std::size_t>(found);
        for (std::size_t i = 0; i < kept; ++i)
        {
            std::size_t const row = static_cast<std::size_t>(image * rows) + i;
            out.boxes.push_back({static_cast<float>(b[row * 4]), static_cast<float>(b[row * 4 + 1]),
                static_cast<float>(b[row * 4 + 2]), static_cast<float>(b[row * 4 + 3])});
            out.scores.push_back(static_cast<float>(s[row]));
            double const label = c[row];
            out.labels.push_back(std::isfinite(label) && std::abs(label) < 2e9 ? static_cast<int32_t>(label) : -1);
            if (masks != nullptr)
            {
                for (std::size_t k = 0; k < maskArea; ++k)
                {
                    out.masks.push_back(static_cast<float>(m[row * maskArea + k]));
                }
            }
        }
    }
    return images;
}
} // namespace

Expected<std::vector<ImageDetections>> detectionsFromOutputs(std::map<std::string, HostTensor> const& outputs)
{
    try
    {
        return readDetections(outputs);
    }
    catch (std::exception const& error) // out of memory: an error, not a crash
    {
        return Status::error(std::string("reading a detector's outputs: ") + error.what());
    }
}

double legacyIou(std::array<float, 4> const& a, std::array<float, 4> const& b) noexcept
{
    double const left = std::max<double>(a[0], b[0]);
    double const top = std::max<double>(a[1], b[1]);
    double const right = std::min<double>(a[2], b[2]);
    double const bottom = std::min<double>(a[3], b[3]);
    double const inter = std::max(right - left + 1.0, 0.0) * std::max(bottom - top + 1.0, 0.0);
    auto area = [](std::array<float, 4> const& x) {
        return (static_cast<double>(x[2]) - x[0] + 1.0) * (static_cast<double>(x[3]) - x[1] + 1.0);
    };
    double const both = area(a) + area(b) - inter;
    return both > 0.0 ? inter / both : 0.0; // NaN boxes land here too (comparisons are false)
}

DetectionMatch matchDetections(ImageDetections const& reference, ImageDetections const& other, double iouThreshold)
{
    DetectionMatch match;
    std::vector<std::size_t> order(reference.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    // Descending score, ties in index order; NaN scores last (a strict weak order either way).
    auto key = [&](std::size_t i) {
        float const s = reference.scores[i];
        return std::isnan(s) ? -std::numeric_limits<double>::infinity() : static_cast<double>(s);
    };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return key(x) > key(y); });
    std::vector<bool> taken(other.size(), false);
    for (std::size_t i : order)
    {
        double best = -1.0;
        std::size_t bestIndex = 0;
        for (std::size_t j = 0; j < other.size(); ++j)
        {
            double const iou = !taken[j] && reference.labels[i] == other.labels[j]
                ? legacyIou(reference.boxes[i], other.boxes[j])
                : -1.0;
            if (iou > best)
            {
                best = iou;
                bestIndex = j;
            }
        }
        if (!other.scores.empty() && best >= iouThreshold)
        {
            taken[bestIndex] = true;
            match.pairs.emplace_back(i, bestIndex);
        }
        else
        {
            match.unmatchedReference.push_back(i);
        }
    }
    for (std::size_t j = 0; j < other.size(); ++j)
    {
        if (!taken[j])
        {
            match.unmatchedOther.push_back(j);
        }
    }
    return match;
}

DetectionCheck checkDetections(ImageDetections const& reference, ImageDetections const& other,
    DetectionTolerances const& tolerances, std::size_t capacity)
{
    DetectionCheck check;
    check.referenceCount = reference.size();
    check.otherCount = other.size();
    DetectionMatch const match = matchDetections(reference, other, tolerances.matchIou);
    check.matched = match.pairs.size();
    bool const masksComparable = reference.maskSize == other.maskSize;
    std::size_t const maskArea = static_cast<std::size_t>(reference.maskSize * reference.maskSize);
    auto track = [&check](double& worst, double a, double b) {
        if (!std::isfinite(a) || !std::isfinite(b))
        {
            check.finite = false;
            return;
        }
        worst = std::max(worst, std::abs(a - b));
    };
    for (auto const& [i, j] : match.pairs)
    {
        for (int k = 0; k < 4; ++k)
        {
            track(check.maxBoxError, reference.boxes[i][k], other.boxes[j][k]);
        }
        track(check.maxScoreError, reference.scores[i], other.scores[j]);
        if (masksComparable)
        {
            for (std::size_t k = 0; k < maskArea; ++k)
            {
                track(check.maxMaskError, reference.mask(i)[k], other.mask(j)[k]);
            }
        }
    }
    if (!masksComparable)
    {
        check.maxMaskError = std::numeric_limits<double>::infinity();
    }
    // The cuts a near-tie can fall on: the score threshold (if the model has one), and the lowest kept
    // score of a side that reached its fixed size (what ranked just below it was dropped).
    std::vector<double> cuts;
    if (tolerances.scoreThreshold > 0.0)
    {
        cuts.push_back(tolerances.scoreThreshold);
    }
    for (ImageDetections const* side : {&reference, &other})
    {
        if (capacity > 0 && side->size() >= capacity)
        {
            cuts.push_back(*std::min_element(side->scores.begin(), side->scores.end()));
        }
    }
    auto nearCut = [&](float score) {
        return std::any_of(cuts.begin(), cuts.end(),
            [&](double cut) { return std::abs(static_cast<double>(score) - cut) <= tolerances.borderline; });
    };
    // An NMS near-tie: one side suppressed the detection and the other kept it, because its IoU with a
    // same-class detection sits at the NMS threshold; or the two sides kept different members of a pair
    // of about equal scores (the other side's unmatched detection of the class overlaps it).
    std::vector<std::size_t> const& otherUnmatched = match.unmatchedOther;
    std::vector<std::size_t> const& referenceUnmatched = match.unmatchedReference;
    auto nmsTie = [&](ImageDetections const& side, std::size_t index) {
        if (tolerances.nmsThreshold <= 0.0)
        {
            return false;
        }
        ImageDetections const& opposite = &side == &reference ? other : reference;
        for (std::size_t k : &side == &reference ? otherUnmatched : referenceUnmatched)
        {
            if (opposite.labels[k] == side.labels[index]
                && legacyIou(opposite.boxes[k], side.boxes[index]) >= tolerances.nmsThreshold - kNmsIouSlack
                && std::abs(static_cast<double>(opposite.scores[k]) - side.scores[index]) <= tolerances.borderline)
            {
                return true;
            }
        }
        for (ImageDetections const* neighbours : {&reference, &other})
        {
            for (std::size_t k = 0; k < neighbours->size(); ++k)
            {
                bool const self = neighbours == &side && k == index;
                if (!self && neighbours->labels[k] == side.labels[index]
                    && std::abs(legacyIou(neighbours->boxes[k], side.boxes[index]) - tolerances.nmsThreshold)
                        <= tolerances.borderline)
                {
                    return true;
                }
            }
        }
        return false;
    };
    for (std::size_t i : match.unmatchedReference)
    {
        ++(nearCut(reference.scores[i]) || nmsTie(reference, i) ? check.borderline : check.unmatched);
    }
    for (std::size_t j : match.unmatchedOther)
    {
        ++(nearCut(other.scores[j]) || nmsTie(other, j) ? check.borderline : check.unmatched);
    }
    return check;
}

namespace
{
Expected<std::vector<uint8_t>> pasteOneMask(float const* mask, int64_t maskSize, std::array<float, 4> const& box,
    int64_t imageHeight, int64_t imageWidth, float threshold, int64_t padding)
{
    if (mask == nullptr || maskSize < 1 || maskSize > kMaxMaskSize || padding < 0 || padding > maskSize)
    {
        return Status::error("pasteMask: mask size " + std::to_string(maskSize) + " with padding "
            + std::to_string(padding) + " is not supported");
    }
    if (imageHeight < 1 || imageWidth < 1 || imageHeight > kMaxImageSide || imageWidth > kMaxImageSide)
    {
        return Status::error("pasteMask: image size " + std::to_string(imageHeight) + "x" + std::to_string(imageWidth)
            + " is outside 1.." + std::to_string(kMaxImageSide));
    }
    if (!(threshold >= 0.0F))
    {
        return Status::error("pasteMask: the threshold must be a number >= 0");
    }
    if (!isFiniteBox(box)
        || std::any_of(box.begin(), box.end(), [](float v) { return std::abs(v) > kMaxBoxCoordinate; }))
    {
        return Status::error("pasteMask: box (" + std::to_string(box[0]) + ", " + std::to_string(box[1]) + ", "
            + std::to_string(box[2]) + ", " + std::to_string(box[3]) + ") is not finite or beyond +-1e6 px");
    }
    int64_t const padded = maskSize + 2 * padding;
    // Grow the box by the padding's factor around its centre, then truncate (as .to(int32) does).
    float const scale = static_cast<float>(static_cast<double>(padded) / static_cast<double>(maskSize));
    float const wHalf = (box[2] - box[0]) * 0.5F * scale;
    float const hHalf = (box[3] - box[1]) * 0.5F * scale;
    float const xCentre = (box[2] + box[0]) * 0.5F;
    float const yCentre = (box[3] + box[1]) * 0.5F;
    auto const x0 = static_cast<int64_t>(xCentre - wHalf);
    auto const y0 = static_cast<int64_t>(yCentre - hHalf);
    auto const x1 = static_cast<int64_t>(xCentre + wHalf);
    auto const y1 = static_cast<int64_t>(yCentre + hHalf);
    int64_t const width = std::max<int64_t>(x1 - x0 + 1, 1);
    int64_t const height = std::max<int64_t>(y1 - y0 + 1, 1);

    std::vector<uint8_t> out(static_cast<std::size_t>(imageHeight * imageWidth), 0);
    int64_t const ix0 = std::max<int64_t>(x0, 0);
    int64_t const ix1 = std::min<int64_t>(x1 + 1, imageWidth);
    int64_t const iy0 = std::max<int64_t>(y0, 0);
    int64_t const iy1 = std::min<int64_t>(y1 + 1, imageHeight);
    auto cell = [&](int64_t row, int64_t column) -> float {
        row -= padding;
        column -= padding;
        bool const inside = row >= 0 && row < maskSize && column >= 0 && column < maskSize;
        return inside ? mask[row * maskSize + column] : 0.0F;
    };
    // Only the part of the resized mask that lands in the image is computed.
    std::vector<AxisSample> columns;
    for (int64_t x = ix0; x < ix1; ++x)
    {
        columns.push_back(axisSample(x - x0, padded, width));
    }
    for (int64_t y = iy0; y < iy1; ++y)
    {
        AxisSample const r = axisSample(y - y0, padded, height);
        for (int64_t x = ix0; x < ix1; ++x)
        {
            AxisSample const& c = columns[static_cast<std::size_t>(x - ix0)];
            float const top = cell(r.low, c.low) * (1.0F - c.frac) + cell(r.low, c.high) * c.frac;
            float const bottom = cell(r.high, c.low) * (1.0F - c.frac) + cell(r.high, c.high) * c.frac;
            float const value = top * (1.0F - r.frac) + bottom * r.frac;
            out[static_cast<std::size_t>(y * imageWidth + x)] = value > threshold ? 1 : 0;
        }
    }
    return out;
}
} // namespace

Expected<std::vector<uint8_t>> pasteMask(float const* mask, int64_t maskSize, std::array<float, 4> const& box,
    int64_t imageHeight, int64_t imageWidth, float threshold, int64_t padding)
{
    try
    {
        return pasteOneMask(mask, maskSize, box, imageHeight, imageWidth, threshold, padding);
    }
    catch (std::exception const& error) // out of memory: an error, not a crash
    {
        return Status::error(std::string("pasteMask: ") + error.what());
    }
}

Status scaleBoxes(ImageDetections& detections, int64_t inHeight, int64_t inWidth, int64_t outHeight, int64_t outWidth)
{
    if (inHeight < 1 || inWidth < 1 || outHeight < 1 || outWidth < 1)
    {
        return Status::error("scaleBoxes: sizes must be positive, got " + std::to_string(inHeight) + "x"
            + std::to_string(inWidth) + " -> " + std::to_string(outHeight) + "x" + std::to_string(outWidth));
    }
    float const x = static_cast<float>(static_cast<double>(outWidth) / static_cast<double>(inWidth));
    float const y = static_cast<float>(static_cast<double>(outHeight) / static_cast<double>(inHeight));
    for (std::array<float, 4>& box : detections.boxes)
    {
        box = {box[0] * x, box[1] * y, box[2] * x, box[3] * y};
    }
    return Status();
}

Expected<HostTensor> pasteMasks(ImageDetections const& detections, int64_t rows, int64_t imageHeight,
    int64_t imageWidth, float threshold)
{
    if (detections.maskSize < 1)
    {
        return Status::error("these detections have no masks (not a Mask R-CNN file)");
    }
    if (rows < static_cast<int64_t>(detections.size()))
    {
        return Status::error("pasteMasks: " + std::to_string(rows) + " rows cannot hold "
            + std::to_string(detections.size()) + " detections");
    }
    if (imageHeight < 1 || imageWidth < 1 || imageHeight > kMaxImageSide || imageWidth > kMaxImageSide)
    {
        return Status::error("pasteMasks: image size " + std::to_string(imageHeight) + "x" + std::to_string(imageWidth)
            + " is outside 1.." + std::to_string(kMaxImageSide));
    }
    auto tensor = HostTensor::allocate(DType::kUInt8, {rows, imageHeight, imageWidth});
    if (!tensor)
    {
        return tensor.status();
    }
    std::size_t const area = static_cast<std::size_t>(imageHeight * imageWidth);
    for (std::size_t i = 0; i < detections.size(); ++i)
    {
        auto pasted = pasteMask(detections.mask(i), detections.maskSize, detections.boxes[i], imageHeight, imageWidth,
            threshold);
        if (!pasted)
        {
            return pasted.status().withContext("detection " + std::to_string(i));
        }
        std::copy(pasted->begin(), pasted->end(), reinterpret_cast<uint8_t*>(tensor->data.data()) + i * area);
    }
    return tensor;
}

} // namespace deformrt
